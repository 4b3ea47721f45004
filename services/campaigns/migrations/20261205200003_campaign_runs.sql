-- Launches: one run per launch of a campaign. The run is the audience snapshot's bookkeeping:
-- the fan-out publishes the audience to publishing's work queue in batches, in contact-id
-- order, and checkpoints `cursor_contact_id` / `batches` / counters after every few batches so
-- a crashed fan-out (any replica) continues where it stopped. Publishing owns the per-recipient
-- delivery records and the sent/failed counters.
CREATE TABLE campaigns.campaign_runs (
    tenant_id          uuid NOT NULL,
    id                 uuid NOT NULL,
    campaign_id        uuid NOT NULL,
    -- fanning_out -> fanned_out -> completed; cancelled.
    status             text NOT NULL DEFAULT 'fanning_out'
        CHECK (status IN ('fanning_out', 'fanned_out', 'completed', 'cancelled')),
    -- Recipients counted at launch (what the quota was taken for).
    counted            bigint NOT NULL DEFAULT 0,
    -- Recipients published so far (the audience once fanned out).
    published          bigint NOT NULL DEFAULT 0,
    batches            bigint NOT NULL DEFAULT 0,
    cursor_contact_id  uuid,
    -- Left out by the snapshot, by reason ({"no_consent": 3, "excluded": 10, ...}).
    skipped            jsonb NOT NULL DEFAULT '{}'::jsonb,
    channels           text[] NOT NULL,
    quota_key          text NOT NULL DEFAULT '',
    quota_granted      bigint NOT NULL DEFAULT 0,
    -- messages per recipient (channels that consume quota).
    quota_per_recipient integer NOT NULL DEFAULT 0,
    lease_owner        text,
    lease_until        timestamptz,
    launched_by        uuid,
    launched_at        timestamptz NOT NULL DEFAULT now(),
    fanned_out_at      timestamptz,
    completed_at       timestamptz,
    last_error         text NOT NULL DEFAULT '',
    CONSTRAINT campaign_runs_pkey PRIMARY KEY (tenant_id, id)
);
CREATE INDEX campaign_runs_campaign_idx ON campaigns.campaign_runs (tenant_id, campaign_id, launched_at DESC);
-- The runner's claim: runs to fan out or to watch for completion, across tenants.
CREATE INDEX campaign_runs_open_idx ON campaigns.campaign_runs (lease_until)
    WHERE status IN ('fanning_out', 'fanned_out');

ALTER TABLE campaigns.campaign_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns.campaign_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaigns.campaign_runs
    USING (tenant_id = public.cos_current_tenant())
    WITH CHECK (tenant_id = public.cos_current_tenant());

-- The latest run, and why the last (scheduled) launch failed if it did.
ALTER TABLE campaigns.campaigns
    ADD COLUMN current_run_id uuid,
    ADD COLUMN last_error text NOT NULL DEFAULT '',
    -- The scheduler's claim on a due campaign (so two replicas never launch it together), and
    -- the claim's token (only its holder may send the campaign back to draft).
    ADD COLUMN launch_claimed_until timestamptz,
    ADD COLUMN launch_claim uuid;
