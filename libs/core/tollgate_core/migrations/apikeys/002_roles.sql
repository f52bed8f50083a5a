-- A key carries a principal (its name) and one or more roles; every HTTP service checks them.
-- Names are unique among active keys only, so a revoked key's name can be given to a new key.
ALTER TABLE api_keys ADD COLUMN roles text[];
UPDATE api_keys SET roles = ARRAY[role];
ALTER TABLE api_keys ALTER COLUMN roles SET NOT NULL;
ALTER TABLE api_keys DROP COLUMN role;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_roles_known CHECK (
    cardinality(roles) > 0
    AND roles <@ ARRAY['producer', 'scorer-client', 'data-scientist', 'approver', 'operator', 'auditor',
                       'compliance-reader', 'viewer']::text[]
);
ALTER TABLE api_keys DROP CONSTRAINT api_keys_name_key;
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
ALTER TABLE api_keys ADD COLUMN rotated_at timestamptz;
