-- Identity: users (global), tenants and everything tenant-owned under forced row-level security.
-- Runs with search_path = identity; names are still schema-qualified for readers.

CREATE TABLE identity.users (
    id               uuid PRIMARY KEY,
    email            text NOT NULL,
    email_normalized text NOT NULL CONSTRAINT users_email_key UNIQUE,
    display_name     text NOT NULL,
    password_hash    text NOT NULL,
    platform_admin   boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity.tenants (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    slug       text NOT NULL CONSTRAINT tenants_slug_key UNIQUE,
    created_by uuid NOT NULL REFERENCES identity.users (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity.memberships (
    tenant_id  uuid NOT NULL REFERENCES identity.tenants (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'editor', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memberships_pkey PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON identity.memberships (user_id, created_at);

-- Opaque refresh tokens, stored as SHA-256 of the secret. A family is one login session: every
-- rotation adds a row; presenting a used row revokes the family.
CREATE TABLE identity.refresh_tokens (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES identity.tenants (id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    token_hash  text NOT NULL CONSTRAINT refresh_tokens_hash_key UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON identity.refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON identity.refresh_tokens (tenant_id, user_id) WHERE revoked_at IS NULL;

CREATE TABLE identity.api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES identity.tenants (id) ON DELETE CASCADE,
    name         text NOT NULL,
    masked_key   text NOT NULL,
    secret_hash  text NOT NULL CONSTRAINT api_keys_secret_hash_key UNIQUE,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'editor', 'viewer')),
    scopes       text[] NOT NULL,
    created_by   uuid NOT NULL REFERENCES identity.users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant_idx ON identity.api_keys (tenant_id, created_at);

-- Append-only record of every identity mutation in a tenant.
CREATE TABLE identity.audit_log (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES identity.tenants (id) ON DELETE CASCADE,
    actor_user_id    uuid,
    actor_api_key_id uuid,
    action           text NOT NULL,
    target_type      text NOT NULL,
    target_id        text NOT NULL,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_id       text,
    occurred_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_idx ON identity.audit_log (tenant_id, id DESC);

-- Platform-level actions (cross-tenant reads by platform administrators).
CREATE TABLE identity.platform_audit_log (
    id            uuid PRIMARY KEY,
    actor_user_id uuid NOT NULL,
    action        text NOT NULL,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_id    text,
    occurred_at   timestamptz NOT NULL DEFAULT now()
);

-- Ed25519 access-token signing keys; private halves encrypted with the key ring.
CREATE TABLE identity.signing_keys (
    kid             text PRIMARY KEY,
    private_key_enc bytea NOT NULL,
    public_x        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz
);

-- Row-level security: forced, so even the table owner obeys it unless it bypasses RLS.
ALTER TABLE identity.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON identity.tenants
    USING (id = public.cos_current_tenant()) WITH CHECK (id = public.cos_current_tenant());

ALTER TABLE identity.memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON identity.memberships
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());

ALTER TABLE identity.refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON identity.refresh_tokens
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());

ALTER TABLE identity.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON identity.api_keys
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());

ALTER TABLE identity.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity.audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON identity.audit_log
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());
