//! A resource a grant can be scoped to: a type and an id, written `type:id`.

use std::{fmt, str::FromStr};

use crate::{Error, accounts::is_invisible};

/// A thing a permission can be granted on: a type and an id, such as project 42, written
/// `project:42` (the type, a colon, the id; the id may contain colons).
///
/// The type is 1 to 64 characters of ASCII letters, digits, `_`, `-` and `.`; the id 1 to 128
/// visible characters without whitespace (nor invisible ones: zero-width, bidirectional
/// controls). Ids are compared byte for byte: `42` and `042` are two resources. The crate does
/// not know the app's tables: an id is whatever the app uses to name the thing.
///
/// ```
/// use axum_live_auth::Resource;
///
/// let project: Resource = "project:42".parse()?;
/// assert_eq!((project.kind(), project.id()), ("project", "42"));
/// assert_eq!(project.to_string(), "project:42");
/// assert_eq!(Resource::new("project", "42")?, project);
/// assert!("project".parse::<Resource>().is_err());
/// assert!("project:".parse::<Resource>().is_err());
/// assert!("pro ject:1".parse::<Resource>().is_err());
/// # Ok::<_, axum_live_auth::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    kind: String,
    id: String,
}

impl Resource {
    /// A resource of type `kind` with id `id`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] when either part is empty, too long or has characters it may
    /// not have.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Result<Self, Error> {
        let (kind, id) = (kind.into(), id.into());
        let kind_ok = (1..=64).contains(&kind.len())
            && kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        let id_ok = (1..=128).contains(&id.chars().count())
            && !id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c));
        if kind_ok && id_ok {
            Ok(Self { kind, id })
        } else {
            Err(Error::InvalidResource)
        }
    }

    /// The type, such as `project`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The id, such as `42`.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl FromStr for Resource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (kind, id) = s.split_once(':').ok_or(Error::InvalidResource)?;
        Self::new(kind, id)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}
