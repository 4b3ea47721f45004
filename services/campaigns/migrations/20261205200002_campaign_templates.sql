-- Templates a workspace saves from its own campaigns (tenant-private). The built-in catalog by
-- niche is code (src/domain/catalog.rs), not rows.
CREATE TABLE campaigns.campaign_templates (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '',
    goal         text NOT NULL DEFAULT '',
    niche        text NOT NULL CHECK (niche IN ('fitness', 'gaming', 'fashion', 'adult_creator',
                                               'ecommerce', 'saas', 'local_business', 'other')),
    kind         text NOT NULL CHECK (kind IN ('message', 'social_post')),
    channels     text[] NOT NULL DEFAULT '{}',
    platforms    text[] NOT NULL DEFAULT '{}',
    content      jsonb NOT NULL DEFAULT '{}'::jsonb,
    variants     jsonb NOT NULL DEFAULT '[]'::jsonb,
    source_campaign_id uuid,
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_templates_pkey PRIMARY KEY (tenant_id, id)
);

-- Names are unique per workspace (case-insensitive), so "save as template" twice is visible.
CREATE UNIQUE INDEX campaign_templates_name_key ON campaigns.campaign_templates (tenant_id, lower(name));

ALTER TABLE campaigns.campaign_templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns.campaign_templates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaigns.campaign_templates
    USING (tenant_id = public.cos_current_tenant())
    WITH CHECK (tenant_id = public.cos_current_tenant());
