-- cos-bench segmentation: the synthetic audience of one tenant, generated in one statement.
-- $1 tenant id, $2 rows to generate (live + soft-deleted), $3 "now" (the end of the 3 years).
-- Distributions (documented in docs/benchmarks.md): created_at spread over 3 years in insertion
-- order (UUIDv7 ids ascend with it, as the service's Uuid::now_v7 do); 0.5 % soft-deleted;
-- identifiers: email 92 %, phone 35 % plus everyone without an email (about 40 %), CRM id 20 %;
-- locales/time zones/countries weighted (US-heavy); attributes plan (free 60 / starter 25 /
-- pro 11 / enterprise 4 %), score 0..1000 (bell-shaped, 3 % missing), signup_date, country (4 %
-- missing), interests (0..n of 12, skewed popularity); tags from common (newsletter 45 %) to rare
-- (beta-tester 0.5 %, press 0.2 %); consent per channel with a timestamp and a source;
-- last_activity_at skewed recent (12 % never active).
INSERT INTO segmentation.contacts (tenant_id, id, email, email_normalized, phone, external_id,
    first_name, last_name, locale, time_zone, attributes, tags,
    email_consent, email_consent_at, email_consent_source,
    sms_consent, sms_consent_at, sms_consent_source,
    push_consent, push_consent_at, push_consent_source,
    version, created_at, updated_at, last_activity_at, deleted_at)
SELECT $1::uuid,
    (lpad(to_hex((extract(epoch FROM s.created_at) * 1000)::bigint), 12, '0') || '7'
        || substr(s.hx, 1, 3) || substr('89ab', 1 + (s.g % 4)::int, 1) || substr(s.hx, 4, 15))::uuid,
    s.email, lower(s.email),
    CASE WHEN s.has_phone THEN '+' || s.cc || (7000000000 + s.g)::text END,
    CASE WHEN s.r_ext < 0.20 THEN 'crm_' || lpad(s.g::text, 8, '0') END,
    s.first_name, s.last_name, s.locale, s.time_zone,
    jsonb_strip_nulls(jsonb_build_object(
        'plan', (ARRAY['free', 'starter', 'pro', 'enterprise'])[width_bucket(s.r_plan, ARRAY[0.60, 0.85, 0.96]) + 1],
        'score', CASE WHEN s.r_score_missing < 0.03 THEN NULL ELSE round(1000 * (s.r_s1 + s.r_s2 + s.r_s3) / 3) END,
        'signup_date', to_char((s.created_at - s.r_signup * interval '20 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
        'country', CASE WHEN s.r_country < 0.04 THEN NULL ELSE s.country END,
        'interests', nullif(to_jsonb(array_remove(ARRAY[
            CASE WHEN random() < 0.12 THEN 'books' END,
            CASE WHEN random() < 0.10 THEN 'fashion' END,
            CASE WHEN random() < 0.09 THEN 'finance' END,
            CASE WHEN random() < 0.15 THEN 'fitness' END,
            CASE WHEN random() < 0.22 THEN 'food' END,
            CASE WHEN random() < 0.10 THEN 'gaming' END,
            CASE WHEN random() < 0.13 THEN 'movies' END,
            CASE WHEN random() < 0.24 THEN 'music' END,
            CASE WHEN random() < 0.05 THEN 'parenting' END,
            CASE WHEN random() < 0.17 THEN 'sports' END,
            CASE WHEN random() < 0.19 THEN 'tech' END,
            CASE WHEN random() < 0.28 THEN 'travel' END], NULL)), '[]'::jsonb)
    )),
    array_remove(ARRAY[
        CASE WHEN random() < 0.20 THEN 'app-user' END,
        CASE WHEN random() < 0.005 THEN 'beta-tester' END,
        CASE WHEN random() < 0.12 THEN 'black-friday-2024' END,
        CASE WHEN random() < 0.015 THEN 'churn-risk' END,
        CASE WHEN random() < 0.25 THEN 'customer' END,
        CASE WHEN random() < 0.30 THEN 'lead' END,
        CASE WHEN random() < 0.45 THEN 'newsletter' END,
        CASE WHEN random() < 0.002 THEN 'press' END,
        CASE WHEN random() < 0.03 THEN 'vip' END,
        CASE WHEN random() < 0.10 THEN 'webinar-2025' END], NULL)::text[],
    s.email_consent,
    CASE WHEN s.email_consent <> 'unknown' THEN s.created_at + ($3 - s.created_at) * (s.r_ec_at * s.r_ec_at) END,
    CASE s.email_consent
        WHEN 'subscribed' THEN (ARRAY['form', 'import', 'checkout', 'api'])[width_bucket(s.r_src, ARRAY[0.5, 0.8, 0.95]) + 1]
        WHEN 'unsubscribed' THEN (ARRAY['unsubscribe_link', 'preference_center', 'api'])[width_bucket(s.r_src, ARRAY[0.7, 0.9]) + 1]
        ELSE '' END,
    s.sms_consent,
    CASE WHEN s.sms_consent <> 'unknown' THEN s.created_at + ($3 - s.created_at) * s.r_sc_at END,
    CASE s.sms_consent WHEN 'subscribed' THEN 'form' WHEN 'unsubscribed' THEN 'sms_stop' ELSE '' END,
    s.push_consent,
    CASE WHEN s.push_consent <> 'unknown' THEN s.created_at + ($3 - s.created_at) * s.r_pc_at END,
    CASE s.push_consent WHEN 'unknown' THEN '' ELSE 'app' END,
    1 + floor(s.r_upd * 4)::bigint,
    s.created_at,
    s.created_at + ($3 - s.created_at) * s.r_upd,
    CASE WHEN s.r_act_null < 0.12 THEN NULL ELSE $3 - ($3 - s.created_at) * (s.r_act * s.r_act * s.r_act) END,
    CASE WHEN s.g % 201 = 0 THEN s.created_at + ($3 - s.created_at) * s.r_upd END
FROM (
    SELECT b.*,
        CASE WHEN b.r_email < 0.92 THEN lower(b.first_name) || '.' || lower(replace(b.last_name, ' ', '')) || b.g::text || '@'
            || (ARRAY['gmail.com', 'gmail.com', 'gmail.com', 'gmail.com', 'gmail.com', 'gmail.com', 'gmail.com',
                      'yahoo.com', 'yahoo.com', 'outlook.com', 'outlook.com', 'hotmail.com', 'icloud.com',
                      'gmx.de', 'orange.fr', 'acme.com', 'globex.io', 'initech.com', 'umbrella-corp.com',
                      'hooli.xyz'])[1 + floor(b.r_dom * 20)::int] END AS email,
        (ARRAY['en-US', 'en-GB', 'de-DE', 'fr-FR', 'es-ES', 'pt-BR', 'it-IT', 'nl-NL', 'ja-JP', ''])[b.li] AS locale,
        CASE b.li
            WHEN 1 THEN (ARRAY['America/New_York', 'America/Chicago', 'America/Denver', 'America/Los_Angeles'])[width_bucket(b.r_tz, ARRAY[0.47, 0.76, 0.83]) + 1]
            WHEN 2 THEN 'Europe/London' WHEN 3 THEN 'Europe/Berlin' WHEN 4 THEN 'Europe/Paris'
            WHEN 5 THEN 'Europe/Madrid' WHEN 6 THEN 'America/Sao_Paulo' WHEN 7 THEN 'Europe/Rome'
            WHEN 8 THEN 'Europe/Amsterdam' WHEN 9 THEN 'Asia/Tokyo' ELSE '' END AS time_zone,
        CASE WHEN b.li = 10 THEN (ARRAY['CA', 'AU', 'IN', 'MX'])[1 + floor(b.r_tz * 4)::int]
             ELSE (ARRAY['US', 'GB', 'DE', 'FR', 'ES', 'BR', 'IT', 'NL', 'JP'])[b.li] END AS country,
        CASE WHEN b.li = 10 THEN (ARRAY['1', '61', '91', '52'])[1 + floor(b.r_tz * 4)::int]
             ELSE (ARRAY['1', '44', '49', '33', '34', '55', '39', '31', '81'])[b.li] END AS cc,
        b.r_email >= 0.92 OR b.r_phone < 0.35 AS has_phone,
        CASE WHEN b.r_email >= 0.92 THEN 'unknown'
             ELSE (ARRAY['subscribed', 'unsubscribed', 'unknown'])[width_bucket(b.r_ec, ARRAY[0.62, 0.70]) + 1] END AS email_consent,
        CASE WHEN b.r_email < 0.92 AND b.r_phone >= 0.35 THEN 'unknown'
             ELSE (ARRAY['subscribed', 'unsubscribed', 'unknown'])[width_bucket(b.r_sc, ARRAY[0.40, 0.52]) + 1] END AS sms_consent,
        (ARRAY['subscribed', 'unsubscribed', 'unknown'])[width_bucket(b.r_pc, ARRAY[0.22, 0.30]) + 1] AS push_consent
    FROM (
        SELECT g,
            $3::timestamptz - (94608000 * (1 - (g - 1 + random()) / $2)) * interval '1 second' AS created_at,
            md5(g::text) AS hx,
            (ARRAY['James', 'Mary', 'Robert', 'Patricia', 'John', 'Jennifer', 'Michael', 'Linda', 'David',
                   'Elizabeth', 'William', 'Barbara', 'Richard', 'Susan', 'Joseph', 'Jessica', 'Thomas', 'Sarah',
                   'Emma', 'Noah', 'Olivia', 'Liam', 'Mia', 'Lukas', 'Sophie', 'Maximilian', 'Marie', 'Lena',
                   'Hugo', 'Camille', 'Lucas', 'Chloe', 'Mateo', 'Lucia', 'Sofia', 'Carlos', 'Pedro', 'Ana',
                   'Joao', 'Giulia', 'Marco', 'Daan', 'Sanne', 'Hiroshi', 'Yuki', 'Kenji', 'Aiko', 'Priya'])[1 + floor(random() * 48)::int] AS first_name,
            (ARRAY['Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Rodriguez',
                   'Martinez', 'Hernandez', 'Lopez', 'Gonzalez', 'Wilson', 'Anderson', 'Thomas', 'Taylor', 'Moore',
                   'Jackson', 'Martin', 'Lee', 'Thompson', 'White', 'Harris', 'Mueller', 'Schmidt', 'Schneider',
                   'Fischer', 'Weber', 'Dubois', 'Moreau', 'Laurent', 'Bernard', 'Rossi', 'Russo', 'Ferrari',
                   'Silva', 'Santos', 'Oliveira', 'Souza', 'de Jong', 'Jansen', 'Bakker', 'Sato', 'Suzuki',
                   'Takahashi', 'Tanaka', 'Patel'])[1 + floor(random() * 48)::int] AS last_name,
            width_bucket(random(), ARRAY[0.40, 0.50, 0.62, 0.72, 0.80, 0.87, 0.92, 0.95, 0.98]) + 1 AS li,
            random() AS r_dom, random() AS r_email, random() AS r_phone, random() AS r_ext,
            random() AS r_tz, random() AS r_country, random() AS r_plan,
            random() AS r_s1, random() AS r_s2, random() AS r_s3, random() AS r_score_missing,
            random() AS r_signup, random() AS r_ec, random() AS r_sc, random() AS r_pc,
            random() AS r_ec_at, random() AS r_sc_at, random() AS r_pc_at, random() AS r_src,
            random() AS r_act, random() AS r_act_null, random() AS r_upd
        FROM generate_series(1, $2::bigint) AS g
        OFFSET 0
    ) b
) s
