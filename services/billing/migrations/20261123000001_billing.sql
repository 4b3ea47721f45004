-- Billing: the plan catalogue (global), and per tenant under forced row-level security:
-- subscriptions with their history, Checkout sessions, usage counters and quota grants.
-- Runs with search_path = billing; names are still schema-qualified for readers.

-- Plans are global. Limits: NULL = unlimited.
CREATE TABLE billing.plans (
    code                      text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{1,31}$'),
    name                      text NOT NULL CHECK (length(name) BETWEEN 1 AND 80),
    description               text NOT NULL DEFAULT '',
    trial                     boolean NOT NULL DEFAULT false,
    purchasable               boolean NOT NULL DEFAULT true,
    sort_order                integer NOT NULL DEFAULT 0,
    seats                     bigint CHECK (seats >= 0),
    contacts                  bigint CHECK (contacts >= 0),
    campaigns_per_month       bigint CHECK (campaigns_per_month >= 0),
    messages_per_month        bigint CHECK (messages_per_month >= 0),
    ai_budget_minor_per_month bigint CHECK (ai_budget_minor_per_month >= 0),
    storage_bytes             bigint CHECK (storage_bytes >= 0),
    api_keys                  bigint CHECK (api_keys >= 0),
    channels                  text[] NOT NULL DEFAULT '{}',
    automation                boolean NOT NULL DEFAULT false,
    version                   bigint NOT NULL DEFAULT 1,
    updated_at                timestamptz NOT NULL DEFAULT now(),
    updated_by                uuid,
    CHECK (NOT (trial AND purchasable))
);
-- Exactly one plan is where new tenants start.
CREATE UNIQUE INDEX plans_single_trial ON billing.plans (trial) WHERE trial;

CREATE TABLE billing.plan_prices (
    plan_code            text NOT NULL REFERENCES billing.plans (code) ON DELETE CASCADE,
    currency             text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    monthly_amount_minor bigint NOT NULL CHECK (monthly_amount_minor > 0),
    PRIMARY KEY (plan_code, currency)
);

-- One row per tenant, created lazily (the first time billing is asked about the tenant) on the
-- trial plan. Grace and expiry are derived from current_period_end and the clock, never stored,
-- so there is no job that must run for a subscription to lapse on time.
CREATE TABLE billing.subscriptions (
    tenant_id            uuid PRIMARY KEY,
    plan_code            text NOT NULL REFERENCES billing.plans (code),
    base_status          text NOT NULL CHECK (base_status IN ('trialing', 'active')),
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL,
    comped               boolean NOT NULL DEFAULT false,
    suspended_at         timestamptz,
    suspended_reason     text,
    version              bigint NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (current_period_end > current_period_start),
    CHECK ((suspended_at IS NULL) = (suspended_reason IS NULL))
);
CREATE INDEX subscriptions_period_end_idx ON billing.subscriptions (current_period_end);

CREATE TABLE billing.subscription_history (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES billing.subscriptions (tenant_id) ON DELETE CASCADE,
    action              text NOT NULL,
    plan_code           text NOT NULL,
    previous_plan_code  text,
    period_start        timestamptz NOT NULL,
    period_end          timestamptz NOT NULL,
    previous_period_end timestamptz,
    actor_user_id       uuid,
    reason              text NOT NULL DEFAULT '',
    checkout_session_id text,
    request_id          text,
    occurred_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscription_history_tenant_idx ON billing.subscription_history (tenant_id, id DESC);
-- A paid session extends a subscription once, whatever races.
CREATE UNIQUE INDEX subscription_history_checkout_key
    ON billing.subscription_history (checkout_session_id) WHERE checkout_session_id IS NOT NULL;

-- Checkout sessions this service created: what was quoted, and whether it was applied.
CREATE TABLE billing.checkout_sessions (
    id                   text PRIMARY KEY CHECK (id ~ '^cs_[A-Za-z0-9_]{1,250}$'),
    tenant_id            uuid NOT NULL,
    plan_code            text NOT NULL REFERENCES billing.plans (code),
    months               integer NOT NULL CHECK (months BETWEEN 1 AND 36),
    currency             text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    unit_amount_minor    bigint NOT NULL CHECK (unit_amount_minor > 0),
    amount_minor         bigint NOT NULL CHECK (amount_minor > 0),
    url                  text NOT NULL,
    status               text NOT NULL CHECK (status IN ('open', 'completed')),
    created_by           uuid NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz,
    completed_at         timestamptz,
    applied_period_start timestamptz,
    applied_period_end   timestamptz
);
CREATE INDEX checkout_sessions_tenant_idx ON billing.checkout_sessions (tenant_id, created_at DESC);

-- Per-cycle counters (monthly cycles anchored on the subscription period start).
CREATE TABLE billing.usage_counters (
    tenant_id   uuid NOT NULL,
    metric      text NOT NULL CHECK (metric IN ('campaigns_per_month', 'messages_per_month', 'ai_budget_minor_per_month')),
    cycle_start timestamptz NOT NULL,
    used        bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, metric, cycle_start)
);

-- Every grant, keyed by the caller's idempotency key: a retried ConsumeQuota returns the same
-- grant instead of taking twice.
CREATE TABLE billing.quota_grants (
    tenant_id       uuid NOT NULL,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    metric          text NOT NULL,
    cycle_start     timestamptz NOT NULL,
    requested       bigint NOT NULL CHECK (requested > 0),
    granted         bigint NOT NULL CHECK (granted > 0 AND granted <= requested),
    released        bigint NOT NULL DEFAULT 0 CHECK (released >= 0 AND released <= granted),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);

-- Gauges as last reported by the service that owns them (identity: seats, API keys; ...).
CREATE TABLE billing.usage_gauges (
    tenant_id   uuid NOT NULL,
    metric      text NOT NULL CHECK (metric IN ('seats', 'contacts', 'api_keys', 'storage_bytes')),
    value       bigint NOT NULL CHECK (value >= 0),
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, metric)
);

-- Platform administrators' actions: overrides, suspensions, plan edits. Owner role only.
CREATE TABLE billing.admin_audit (
    id            uuid PRIMARY KEY,
    tenant_id     uuid,
    actor_user_id uuid NOT NULL,
    action        text NOT NULL,
    reason        text NOT NULL,
    before        jsonb,
    after         jsonb,
    request_id    text,
    occurred_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_audit_tenant_idx ON billing.admin_audit (tenant_id, id DESC);

-- Row-level security on everything tenant-owned.
ALTER TABLE billing.subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.subscriptions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.subscriptions
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());

ALTER TABLE billing.subscription_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.subscription_history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.subscription_history
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());

ALTER TABLE billing.checkout_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.checkout_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.checkout_sessions
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());

ALTER TABLE billing.usage_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.usage_counters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.usage_counters
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());

ALTER TABLE billing.quota_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.quota_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.quota_grants
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());

ALTER TABLE billing.usage_gauges ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.usage_gauges FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.usage_gauges
    USING (tenant_id = public.cos_current_tenant()) WITH CHECK (tenant_id = public.cos_current_tenant());

-- The catalogue new installations start with; platform admins edit it later.
INSERT INTO billing.plans (code, name, description, trial, purchasable, sort_order, seats, contacts,
    campaigns_per_month, messages_per_month, ai_budget_minor_per_month, storage_bytes, api_keys,
    channels, automation) VALUES
    ('trial', 'Free trial', 'Try Campaign OS: small limits, email and sandbox channels.', true, false, 0,
        2, 500, 5, 1000, 200, 524288000, 1, '{email,sandbox}', false),
    ('starter', 'Starter', 'For a solo marketer or a small team.', false, true, 10,
        3, 2500, 20, 10000, 1000, 2147483648, 2, '{email,webhook,sandbox}', false),
    ('growth', 'Growth', 'Every channel and automation for a growing team.', false, true, 20,
        10, 25000, 100, 100000, 10000, 21474836480, 10, '{email,sms,push,webhook,social,sandbox}', true),
    ('enterprise', 'Enterprise', 'No limits on seats, contacts, campaigns or messages.', false, true, 30,
        NULL, NULL, NULL, NULL, 100000, NULL, NULL, '{email,sms,push,webhook,social,sandbox}', true);

INSERT INTO billing.plan_prices (plan_code, currency, monthly_amount_minor) VALUES
    ('starter', 'usd', 2900), ('starter', 'eur', 2700), ('starter', 'gbp', 2400),
    ('growth', 'usd', 9900), ('growth', 'eur', 9200), ('growth', 'gbp', 7900),
    ('enterprise', 'usd', 49900), ('enterprise', 'eur', 46900), ('enterprise', 'gbp', 39900);
