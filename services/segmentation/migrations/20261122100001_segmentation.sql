-- Segmentation: the audience. Contacts, per-tenant attribute definitions, segments and their
-- materialised membership, CSV import jobs, and the GDPR erasure log. Every table is tenant-owned
-- and under forced row-level security on public.cos_current_tenant().
-- Runs with search_path = segmentation; names are still schema-qualified for readers.

-- Typed custom attributes a tenant defines; contact values are validated against them.
CREATE TABLE segmentation.attribute_definitions (
    tenant_id   uuid NOT NULL,
    key         text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    label       text NOT NULL,
    type        text NOT NULL CHECK (type IN ('string', 'number', 'boolean', 'date', 'string_list')),
    description text NOT NULL DEFAULT '',
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attribute_definitions_pkey PRIMARY KEY (tenant_id, key)
);

-- A contact has at least one of email, phone, external id; each is unique per tenant among live
-- (not soft-deleted) contacts. `attributes` maps attribute keys to JSON values of the defined
-- type (date = "YYYY-MM-DD", string_list = array of strings).
CREATE TABLE segmentation.contacts (
    tenant_id            uuid NOT NULL,
    id                   uuid NOT NULL,
    email                text,
    email_normalized     text,
    phone                text,
    external_id          text,
    first_name           text NOT NULL DEFAULT '',
    last_name            text NOT NULL DEFAULT '',
    locale               text NOT NULL DEFAULT '',
    time_zone            text NOT NULL DEFAULT '',
    attributes           jsonb NOT NULL DEFAULT '{}'::jsonb,
    tags                 text[] NOT NULL DEFAULT '{}',
    email_consent        text NOT NULL DEFAULT 'unknown' CHECK (email_consent IN ('subscribed', 'unsubscribed', 'unknown')),
    email_consent_at     timestamptz,
    email_consent_source text NOT NULL DEFAULT '',
    sms_consent          text NOT NULL DEFAULT 'unknown' CHECK (sms_consent IN ('subscribed', 'unsubscribed', 'unknown')),
    sms_consent_at       timestamptz,
    sms_consent_source   text NOT NULL DEFAULT '',
    push_consent         text NOT NULL DEFAULT 'unknown' CHECK (push_consent IN ('subscribed', 'unsubscribed', 'unknown')),
    push_consent_at      timestamptz,
    push_consent_source  text NOT NULL DEFAULT '',
    version              bigint NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    last_activity_at     timestamptz,
    deleted_at           timestamptz,
    CONSTRAINT contacts_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT contacts_identifier_required CHECK (email IS NOT NULL OR phone IS NOT NULL OR external_id IS NOT NULL),
    CONSTRAINT contacts_attributes_object CHECK (jsonb_typeof(attributes) = 'object')
);
CREATE UNIQUE INDEX contacts_email_key ON segmentation.contacts (tenant_id, email_normalized)
    WHERE deleted_at IS NULL AND email_normalized IS NOT NULL;
CREATE UNIQUE INDEX contacts_phone_key ON segmentation.contacts (tenant_id, phone)
    WHERE deleted_at IS NULL AND phone IS NOT NULL;
CREATE UNIQUE INDEX contacts_external_id_key ON segmentation.contacts (tenant_id, external_id)
    WHERE deleted_at IS NULL AND external_id IS NOT NULL;
-- Selective criteria: tags, attribute equality (jsonb containment) and recent activity.
CREATE INDEX contacts_tags_idx ON segmentation.contacts USING gin (tags);
CREATE INDEX contacts_attributes_idx ON segmentation.contacts USING gin (attributes jsonb_path_ops);
CREATE INDEX contacts_created_idx ON segmentation.contacts (tenant_id, created_at);
CREATE INDEX contacts_activity_idx ON segmentation.contacts (tenant_id, last_activity_at);

-- Live (not soft-deleted) contacts per tenant, kept in the same transaction as every create and
-- delete. Its row lock serialises contact creation within a tenant, which is what makes the
-- plan's contact limit exact under concurrency, and it answers "how many contacts" without a scan.
CREATE TABLE segmentation.tenant_stats (
    tenant_id     uuid PRIMARY KEY,
    live_contacts bigint NOT NULL DEFAULT 0 CHECK (live_contacts >= 0)
);

-- Segments: dynamic (criteria, membership materialised by refresh) or static (hand-kept list).
-- member_count is maintained in the same transaction as segment_members, so it is never stale.
CREATE TABLE segmentation.segments (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL,
    name              text NOT NULL,
    description       text NOT NULL DEFAULT '',
    kind              text NOT NULL CHECK (kind IN ('dynamic', 'static')),
    criteria          jsonb,
    -- Segments this one's criteria reference through in_segment (cycle checks, refresh order).
    depends_on        uuid[] NOT NULL DEFAULT '{}',
    member_count      bigint NOT NULL DEFAULT 0,
    refreshed_at      timestamptz,
    -- When the periodic refresh should next run (dynamic only); claimed with SKIP LOCKED.
    refresh_due_at    timestamptz,
    refresh_interval_secs integer NOT NULL DEFAULT 3600 CHECK (refresh_interval_secs BETWEEN 60 AND 604800),
    version           bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    CONSTRAINT segments_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT segments_criteria_kind CHECK ((kind = 'dynamic') = (criteria IS NOT NULL))
);
CREATE UNIQUE INDEX segments_name_key ON segmentation.segments (tenant_id, lower(name)) WHERE deleted_at IS NULL;
CREATE INDEX segments_refresh_due_idx ON segmentation.segments (refresh_due_at)
    WHERE deleted_at IS NULL AND kind = 'dynamic';

CREATE TABLE segmentation.segment_members (
    tenant_id  uuid NOT NULL,
    segment_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT segment_members_pkey PRIMARY KEY (tenant_id, segment_id, contact_id),
    CONSTRAINT segment_members_segment_fkey FOREIGN KEY (tenant_id, segment_id)
        REFERENCES segmentation.segments (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT segment_members_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES segmentation.contacts (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX segment_members_contact_idx ON segmentation.segment_members (tenant_id, contact_id);

-- Contacts changed since their dynamic memberships were last evaluated; drained by the refresh
-- worker in batches (claimed with SKIP LOCKED).
CREATE TABLE segmentation.dirty_contacts (
    tenant_id  uuid NOT NULL,
    contact_id uuid NOT NULL,
    marked_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dirty_contacts_pkey PRIMARY KEY (tenant_id, contact_id)
);
CREATE INDEX dirty_contacts_marked_idx ON segmentation.dirty_contacts (marked_at);

-- CSV imports run in the background; the uploaded file waits in import_files until a worker
-- claims the job (SKIP LOCKED) and is deleted when the job finishes.
CREATE TABLE segmentation.import_jobs (
    tenant_id       uuid NOT NULL,
    id              uuid NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    file_name       text NOT NULL,
    file_sha256     text NOT NULL,
    file_bytes      bigint NOT NULL,
    mapping         jsonb NOT NULL,
    options         jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Contact limit of the tenant's plan when the job was queued (null: unlimited).
    contact_limit   bigint,
    rows_read       bigint NOT NULL DEFAULT 0,
    rows_imported   bigint NOT NULL DEFAULT 0,
    rows_updated    bigint NOT NULL DEFAULT 0,
    rows_unchanged  bigint NOT NULL DEFAULT 0,
    rows_rejected   bigint NOT NULL DEFAULT 0,
    rows_over_limit bigint NOT NULL DEFAULT 0,
    error           text,
    attempts        integer NOT NULL DEFAULT 0,
    created_by      uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    heartbeat_at    timestamptz,
    finished_at     timestamptz,
    CONSTRAINT import_jobs_pkey PRIMARY KEY (tenant_id, id)
);
CREATE INDEX import_jobs_queue_idx ON segmentation.import_jobs (created_at) WHERE status IN ('queued', 'running');

CREATE TABLE segmentation.import_files (
    tenant_id uuid NOT NULL,
    job_id    uuid NOT NULL,
    content   bytea NOT NULL,
    CONSTRAINT import_files_pkey PRIMARY KEY (tenant_id, job_id),
    CONSTRAINT import_files_job_fkey FOREIGN KEY (tenant_id, job_id)
        REFERENCES segmentation.import_jobs (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE segmentation.import_rejections (
    tenant_id uuid NOT NULL,
    job_id    uuid NOT NULL,
    line      bigint NOT NULL,
    reason    text NOT NULL,
    CONSTRAINT import_rejections_pkey PRIMARY KEY (tenant_id, job_id, line),
    CONSTRAINT import_rejections_job_fkey FOREIGN KEY (tenant_id, job_id)
        REFERENCES segmentation.import_jobs (tenant_id, id) ON DELETE CASCADE
);

-- GDPR erasure audit: who erased which contact id and when. Holds no personal data: the erased
-- identifiers are kept only as SHA-256 digests, so a repeat request can be recognised.
CREATE TABLE segmentation.erasure_log (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL,
    contact_id        uuid NOT NULL,
    identifier_hashes text[] NOT NULL,
    erased_by         uuid NOT NULL,
    request_id        text NOT NULL DEFAULT '',
    reason            text NOT NULL DEFAULT '',
    erased_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT erasure_log_pkey PRIMARY KEY (tenant_id, id)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['attribute_definitions', 'contacts', 'tenant_stats', 'segments', 'segment_members',
        'dirty_contacts', 'import_jobs', 'import_files', 'import_rejections', 'erasure_log'] LOOP
        EXECUTE format('ALTER TABLE segmentation.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE segmentation.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON segmentation.%I
            USING (tenant_id = public.cos_current_tenant())
            WITH CHECK (tenant_id = public.cos_current_tenant())', t);
    END LOOP;
END $$;
