-- Publishing, delivery half: channel connections, delivery jobs (one per campaign run), the
-- per-recipient delivery records and parked batches. Every table is tenant-owned and under
-- forced row-level security on public.cos_current_tenant(); the workers that cross tenants use
-- the owner role explicitly (system transactions).

-- Where a workspace sends from. `settings` holds the non-secret part (SMTP host/port/tls/user/
-- from, webhook URL); `secret` the AES-256-GCM ciphertext of the SMTP password or the webhook
-- signing secret (key ring, AAD = tenant and connection id).
CREATE TABLE publishing.channel_connections (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    kind             text NOT NULL CHECK (kind IN ('smtp', 'webhook', 'sandbox')),
    channels         text[] NOT NULL,
    is_default       boolean NOT NULL DEFAULT false,
    rate_per_second  integer NOT NULL DEFAULT 0 CHECK (rate_per_second BETWEEN 0 AND 10000),
    settings         jsonb NOT NULL DEFAULT '{}'::jsonb,
    secret           bytea,
    version          bigint NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CONSTRAINT channel_connections_pkey PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX channel_connections_name_idx
    ON publishing.channel_connections (tenant_id, lower(name)) WHERE deleted_at IS NULL;

-- One per campaign run: the content snapshot and channel -> connection map it sends with, its
-- state and counters. Counters change in the same transaction as the delivery rows they count:
-- here for SMTP/webhook outcomes (one row per delivery), in `batch_counts` for sandbox batches
-- (insert-only, so parallel workers never queue on this row).
CREATE TABLE publishing.delivery_jobs (
    tenant_id         uuid NOT NULL,
    run_id            uuid NOT NULL,
    campaign_id       uuid NOT NULL,
    campaign_name     text NOT NULL,
    channels          jsonb NOT NULL,
    content           jsonb NOT NULL,
    state             text NOT NULL DEFAULT 'active'
        CHECK (state IN ('active', 'paused', 'cancelled', 'completed')),
    sealed            boolean NOT NULL DEFAULT false,
    batches_total     bigint NOT NULL DEFAULT 0,
    recipients_total  bigint NOT NULL DEFAULT 0,
    sent              bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    retrying          bigint NOT NULL DEFAULT 0,
    skipped           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    CONSTRAINT delivery_jobs_pkey PRIMARY KEY (tenant_id, run_id)
);
CREATE UNIQUE INDEX delivery_jobs_run_idx ON publishing.delivery_jobs (run_id);
CREATE INDEX delivery_jobs_open_idx ON publishing.delivery_jobs (updated_at)
    WHERE state IN ('active', 'paused');

-- Batches of a run that were fully processed (a redelivered batch is counted once); their
-- count is the job's batches_done.
CREATE TABLE publishing.job_batches (
    tenant_id   uuid NOT NULL,
    run_id      uuid NOT NULL,
    seq         bigint NOT NULL,
    done_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_batches_pkey PRIMARY KEY (tenant_id, run_id, seq)
);

-- Deliveries recorded per sandbox batch and channel, in the transaction that inserted them.
CREATE TABLE publishing.batch_counts (
    tenant_id   uuid NOT NULL,
    run_id      uuid NOT NULL,
    seq         bigint NOT NULL,
    channel     text NOT NULL,
    sent        bigint NOT NULL,
    failed      bigint NOT NULL,
    CONSTRAINT batch_counts_pkey PRIMARY KEY (tenant_id, run_id, seq, channel)
);

-- Batches that arrived (or were interrupted) while their job was paused; put back on the work
-- queue when the job is resumed. `payload` is the DeliveryBatch message.
CREATE TABLE publishing.parked_batches (
    tenant_id   uuid NOT NULL,
    run_id      uuid NOT NULL,
    seq         bigint NOT NULL,
    payload     bytea NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT parked_batches_pkey PRIMARY KEY (tenant_id, run_id, seq)
);

-- One row per (campaign, variant, contact, channel): the claim that makes a redelivered batch
-- send nothing twice. `pending` = claimed and being sent (claimed_at is the lease), then sent,
-- failed or retrying (next_attempt_at; `payload` keeps the recipient for the retry). A send
-- renews the claim right before it starts, so a lease only has to outlast one send. Sandbox
-- deliveries keep the rendered message in `rendered`. Test sends (`is_test`) are outside the
-- uniqueness rule and have no run.
CREATE TABLE publishing.deliveries (
    tenant_id            uuid NOT NULL,
    id                   uuid NOT NULL,
    run_id               uuid,
    campaign_id          uuid NOT NULL,
    contact_id           uuid,
    channel              text NOT NULL,
    variant              text NOT NULL DEFAULT '',
    connection_id        uuid,
    batch_seq            bigint,
    status               text NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'retrying')),
    attempts             integer NOT NULL DEFAULT 0,
    recipient            text NOT NULL DEFAULT '',
    provider_message_id  text NOT NULL DEFAULT '',
    error                text NOT NULL DEFAULT '',
    is_test              boolean NOT NULL DEFAULT false,
    payload              bytea,
    rendered             jsonb,
    claimed_at           timestamptz NOT NULL DEFAULT now(),
    -- Who holds a `pending` claim: each claim (a batch's, the sweeper's) has its own token, and
    -- only the holder may renew it, send and record the outcome.
    claim_token          uuid,
    next_attempt_at      timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    CONSTRAINT deliveries_pkey PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX deliveries_once_idx
    ON publishing.deliveries (campaign_id, variant, contact_id, channel) WHERE NOT is_test;
CREATE INDEX deliveries_campaign_idx ON publishing.deliveries (tenant_id, campaign_id, id DESC);
-- Open deliveries of a run (completion check), due retries, abandoned claims.
CREATE INDEX deliveries_open_idx ON publishing.deliveries (run_id)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_retry_idx ON publishing.deliveries (next_attempt_at)
    WHERE status = 'retrying';
CREATE INDEX deliveries_claim_idx ON publishing.deliveries (claimed_at)
    WHERE status = 'pending' AND NOT is_test;

-- Unsubscribe links used (audit; the consent itself lives in segmentation).
CREATE TABLE publishing.unsubscribes (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    contact_id   uuid NOT NULL,
    campaign_id  uuid NOT NULL,
    channel      text NOT NULL,
    changed      boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT unsubscribes_pkey PRIMARY KEY (tenant_id, id)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['channel_connections', 'delivery_jobs', 'job_batches', 'batch_counts', 'parked_batches',
                             'deliveries', 'unsubscribes'] LOOP
        EXECUTE format('ALTER TABLE publishing.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE publishing.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON publishing.%I
            USING (tenant_id = public.cos_current_tenant())
            WITH CHECK (tenant_id = public.cos_current_tenant())', t);
    END LOOP;
END $$;
