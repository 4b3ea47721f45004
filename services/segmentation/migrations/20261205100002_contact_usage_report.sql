-- Billing shows each workspace's contact count on its usage page (GET /v1/billing/usage) and to
-- platform admins. The usage worker reports live_contacts to billing whenever it differs from
-- the value last reported, and records what it reported here (NULL: never reported).
ALTER TABLE segmentation.tenant_stats
    ADD COLUMN reported_contacts bigint,
    ADD COLUMN reported_at timestamptz;

CREATE INDEX tenant_stats_unreported_idx ON segmentation.tenant_stats (tenant_id)
    WHERE reported_contacts IS DISTINCT FROM live_contacts;
