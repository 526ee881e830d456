//! Values whose column types differ between the databases, so that the code around a statement
//! is written once: Postgres keeps `timestamptz`, `interval` and `text[]`, SQLite INTEGER
//! milliseconds since the Unix epoch and newline-joined text.

use std::time::Duration;

use sqlx::{Decode, Encode, Type, encode::IsNull, error::BoxDynError};
use time::OffsetDateTime;

/// A point in time read from the database (and bound back to find the same value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp(pub(crate) OffsetDateTime);

/// A duration bound as a statement parameter: an `interval` on Postgres, milliseconds on SQLite.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span(pub(crate) Duration);

/// A list of names: `text[]` on Postgres, one name per line on SQLite.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Names(pub(crate) Vec<String>);

impl Timestamp {
    /// `to - from`, or zero if `to` is earlier.
    pub(crate) fn until(self, to: Self) -> Duration {
        Duration::try_from(to.0 - self.0).unwrap_or(Duration::ZERO)
    }
}

/// Each value's column type on database `$db`: that of the type it is stored as.
macro_rules! stored_as {
    ($db:ty: $($value:ty => $stored:ty),*) => {$(
        impl Type<$db> for $value {
            fn type_info() -> <$db as sqlx::Database>::TypeInfo {
                <$stored as Type<$db>>::type_info()
            }
        }
    )*};
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::{
        Postgres,
        postgres::{PgArgumentBuffer, PgValueRef},
    };

    use super::*;

    stored_as!(Postgres: Timestamp => OffsetDateTime, Span => Duration, Names => Vec<String>);

    impl Decode<'_, Postgres> for Timestamp {
        fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
            <OffsetDateTime as Decode<'_, Postgres>>::decode(value).map(Self)
        }
    }

    impl Encode<'_, Postgres> for Timestamp {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            <OffsetDateTime as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
        }
    }

    impl Encode<'_, Postgres> for Span {
        /// In whole microseconds, Postgres' precision (sqlx refuses a finer `Duration`).
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            let micros = u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX);
            <Duration as Encode<'_, Postgres>>::encode_by_ref(&Duration::from_micros(micros), buf)
        }
    }

    impl Decode<'_, Postgres> for Names {
        fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
            <Vec<String> as Decode<'_, Postgres>>::decode(value).map(Self)
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use sqlx::{
        Sqlite,
        sqlite::{SqliteArgumentsBuffer, SqliteValueRef},
    };

    use super::*;

    stored_as!(Sqlite: Timestamp => i64, Span => i64, Names => String);

    impl Decode<'_, Sqlite> for Timestamp {
        fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
            let nanos = i128::from(<i64 as Decode<'_, Sqlite>>::decode(value)?) * 1_000_000;
            Ok(Self(OffsetDateTime::from_unix_timestamp_nanos(nanos)?))
        }
    }

    impl Encode<'_, Sqlite> for Timestamp {
        fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
            let millis = i64::try_from(self.0.unix_timestamp_nanos() / 1_000_000)?;
            <i64 as Encode<'_, Sqlite>>::encode_by_ref(&millis, buf)
        }
    }

    impl Encode<'_, Sqlite> for Span {
        fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
            let millis = i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX);
            <i64 as Encode<'_, Sqlite>>::encode_by_ref(&millis, buf)
        }
    }

    impl Decode<'_, Sqlite> for Names {
        fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
            let text = <&str as Decode<'_, Sqlite>>::decode(value)?;
            // Split on exactly the separator: `lines()` would also take a name's trailing
            // `\r` for part of a line end (`admin\r` read back as `admin`).
            let names = text.split('\n').filter(|name| !name.is_empty());
            Ok(Self(names.map(str::to_owned).collect()))
        }
    }
}
