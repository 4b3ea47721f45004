-- Campaigns: what a marketer plans and sends. Every table is tenant-owned and under forced
-- row-level security on public.cos_current_tenant().
-- Runs with search_path = campaigns; names are still schema-qualified for readers.

-- One campaign. `content` holds the channel templates ({"email": {...}, "sms": {...},
-- "webhook": {...}}), `variants` the A/B variants ([{"key", "name", "weight"}]). The status
-- follows the state machine in src/domain/state.rs; the service is the only writer.
CREATE TABLE campaigns.campaigns (
    tenant_id              uuid NOT NULL,
    id                     uuid NOT NULL,
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description            text NOT NULL DEFAULT '',
    goal                   text NOT NULL DEFAULT '',
    kind                   text NOT NULL CHECK (kind IN ('message', 'social_post')),
    status                 text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled', 'archived')),
    channels               text[] NOT NULL DEFAULT '{}',
    platforms              text[] NOT NULL DEFAULT '{}',
    target_segment_ids     uuid[] NOT NULL DEFAULT '{}',
    exclusion_segment_ids  uuid[] NOT NULL DEFAULT '{}',
    content                jsonb NOT NULL DEFAULT '{}'::jsonb,
    budget_amount_minor    bigint CHECK (budget_amount_minor >= 0),
    budget_currency        text CHECK (budget_currency ~ '^[A-Z]{3}$'),
    send_at                timestamptz,
    time_zone              text,
    local_send_at          timestamp,
    ambiguous_local_time   boolean NOT NULL DEFAULT false,
    variants               jsonb NOT NULL DEFAULT '[]'::jsonb,
    owner_user_id          uuid NOT NULL,
    duplicated_from        uuid,
    version                bigint NOT NULL DEFAULT 1,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    deleted_at             timestamptz,
    CONSTRAINT campaigns_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT campaigns_budget_pair CHECK ((budget_amount_minor IS NULL) = (budget_currency IS NULL)),
    CONSTRAINT campaigns_schedule_complete CHECK (
        (send_at IS NULL AND time_zone IS NULL AND local_send_at IS NULL)
        OR (send_at IS NOT NULL AND time_zone IS NOT NULL AND local_send_at IS NOT NULL)),
    CONSTRAINT campaigns_scheduled_has_time CHECK (status <> 'scheduled' OR send_at IS NOT NULL)
);

-- Lists are newest first (ids are UUIDv7) with a keyset on id.
CREATE INDEX campaigns_list_idx ON campaigns.campaigns (tenant_id, id DESC) WHERE deleted_at IS NULL;
-- The scheduler's claim: due scheduled campaigns across tenants.
CREATE INDEX campaigns_due_idx ON campaigns.campaigns (send_at)
    WHERE status = 'scheduled' AND deleted_at IS NULL;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['campaigns'] LOOP
        EXECUTE format('ALTER TABLE campaigns.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE campaigns.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON campaigns.%I
            USING (tenant_id = public.cos_current_tenant())
            WITH CHECK (tenant_id = public.cos_current_tenant())', t);
    END LOOP;
END $$;
