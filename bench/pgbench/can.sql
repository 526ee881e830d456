\set u random(1, 100)
\set p random(1, 1000)
SELECT EXISTS (SELECT 1 FROM auth_user_resource_permissions WHERE user_id = :u AND resource_type = 'project' AND resource_id = CAST(:p AS text) AND permission = 'project.read') OR EXISTS (SELECT 1 FROM auth_user_resource_roles ur JOIN auth_role_permissions rp ON rp.role_id = ur.role_id AND rp.permission = 'project.read' WHERE ur.user_id = :u AND ur.resource_type = 'project' AND ur.resource_id = CAST(:p AS text));
