//! The built-in campaign templates, by niche. They are code, not rows: every workspace sees the
//! same catalog, it ships with the binary, and a unit test renders every one of them. Templates a
//! workspace saves for itself live in `campaigns.campaign_templates`.

/// Niches templates are filed under.
pub const NICHES: [&str; 7] = [
    "fitness",
    "gaming",
    "fashion",
    "adult_creator",
    "ecommerce",
    "saas",
    "local_business",
];

/// Whether `niche` is one of [`NICHES`].
pub fn is_niche(niche: &str) -> bool {
    NICHES.contains(&niche)
}

/// Templates of this niche are for adult audiences: listed only when asked for.
pub fn is_age_restricted(niche: &str) -> bool {
    niche == "adult_creator"
}

/// One built-in template. Its id is `builtin-<key>`.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub key: &'static str,
    pub niche: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub goal: &'static str,
    /// "message" or "social_post".
    pub kind: &'static str,
    pub channels: &'static [&'static str],
    pub platforms: &'static [&'static str],
    /// Email content: subject, preheader, HTML body, text body.
    pub email: Option<[&'static str; 4]>,
    pub sms: Option<&'static str>,
}

/// Prefix of built-in template ids.
pub const BUILTIN_PREFIX: &str = "builtin-";

impl Builtin {
    pub fn id(&self) -> String {
        format!("{BUILTIN_PREFIX}{}", self.key)
    }
}

/// The built-in template with this id (`builtin-<key>`).
pub fn builtin(id: &str) -> Option<&'static Builtin> {
    let key = id.strip_prefix(BUILTIN_PREFIX)?;
    BUILTINS.iter().find(|b| b.key == key)
}

/// The catalog. Content uses only built-in contact fields, so it renders for any workspace.
pub static BUILTINS: &[Builtin] = &[
    Builtin {
        key: "fitness-new-member-welcome",
        niche: "fitness",
        name: "New member welcome",
        description: "Welcome new members and get them to book their first class.",
        goal: "First class booked within 7 days",
        kind: "message",
        channels: &["email"],
        platforms: &[],
        email: Some([
            "Welcome to the club, {{ contact.first_name | default(\"friend\") }}!",
            "Your first class is on us",
            "<h1>Hi {{ contact.first_name | default(\"there\") }},</h1>\n<p>Welcome aboard. Book your first class this week and it is on us.</p>\n<p>See you on the floor!</p>",
            "Hi {{ contact.first_name | default(\"there\") }},\n\nWelcome aboard. Book your first class this week and it is on us.\n\nSee you on the floor!",
        ]),
        sms: None,
    },
    Builtin {
        key: "fitness-challenge-reminder",
        niche: "fitness",
        name: "30-day challenge reminder",
        description: "A short nudge to keep challenge participants going.",
        goal: "Challenge completion",
        kind: "message",
        channels: &["sms"],
        platforms: &[],
        email: None,
        sms: Some(
            "{{ contact.first_name | default(\"Hey\") }}, day {{ campaign.day | default(\"15\") }} of the challenge: halfway there. Keep going!",
        ),
    },
    Builtin {
        key: "gaming-launch-day",
        niche: "gaming",
        name: "Launch day announcement",
        description: "Tell your players the update (or the game) is live.",
        goal: "Day-one installs",
        kind: "message",
        channels: &["email"],
        platforms: &[],
        email: Some([
            "It's live. Jump in, {{ contact.first_name | default(\"player\") }}",
            "Patch notes, rewards and a launch-week bonus",
            "<h1>It's live!</h1>\n<p>{{ contact.first_name | default(\"Player\") }}, the wait is over. Log in this week for the launch bonus.</p>",
            "It's live!\n\n{{ contact.first_name | default(\"Player\") }}, the wait is over. Log in this week for the launch bonus.",
        ]),
        sms: None,
    },
    Builtin {
        key: "gaming-stream-teaser",
        niche: "gaming",
        name: "Stream teaser",
        description: "Announce tonight's stream on your social accounts.",
        goal: "Live viewers",
        kind: "social_post",
        channels: &[],
        platforms: &["twitter", "tiktok", "youtube"],
        email: None,
        sms: None,
    },
    Builtin {
        key: "fashion-new-collection",
        niche: "fashion",
        name: "New collection drop",
        description: "Introduce a new collection to subscribers before it goes public.",
        goal: "Early-access orders",
        kind: "message",
        channels: &["email"],
        platforms: &[],
        email: Some([
            "{{ contact.first_name | default(\"You\") }}, first look at the new collection",
            "Early access ends Sunday",
            "<h1>The new collection is here</h1>\n<p>{{ contact.first_name | default(\"Hi\") }}, subscribers shop it first. Early access ends Sunday.</p>",
            "The new collection is here.\n\n{{ contact.first_name | default(\"Hi\") }}, subscribers shop it first. Early access ends Sunday.",
        ]),
        sms: None,
    },
    Builtin {
        key: "fashion-lookbook-post",
        niche: "fashion",
        name: "Lookbook post",
        description: "Share the season's lookbook on visual platforms.",
        goal: "Saves and profile visits",
        kind: "social_post",
        channels: &[],
        platforms: &["instagram", "pinterest"],
        email: None,
        sms: None,
    },
    Builtin {
        key: "adult-creator-new-content",
        niche: "adult_creator",
        name: "New content for subscribers",
        description: "Tell subscribers (18+) that new content is up. Age-restricted: send only to audiences verified as adults.",
        goal: "Subscriber engagement",
        kind: "message",
        channels: &["email"],
        platforms: &[],
        email: Some([
            "New drop for you, {{ contact.first_name | default(\"there\") }}",
            "Subscribers only",
            "<p>Hi {{ contact.first_name | default(\"there\") }}, new content is up on your subscription page.</p>",
            "Hi {{ contact.first_name | default(\"there\") }}, new content is up on your subscription page.",
        ]),
        sms: None,
    },
    Builtin {
        key: "ecommerce-abandoned-cart",
        niche: "ecommerce",
        name: "Abandoned cart reminder",
        description: "Bring shoppers back to the cart they left.",
        goal: "Recovered carts",
        kind: "message",
        channels: &["email"],
        platforms: &[],
        email: Some([
            "You left something behind, {{ contact.first_name | default(\"there\") }}",
            "Your cart is saved for 48 hours",
            "<p>Hi {{ contact.first_name | default(\"there\") }},</p>\n<p>Your cart is still waiting. Complete your order in the next 48 hours.</p>",
            "Hi {{ contact.first_name | default(\"there\") }},\n\nYour cart is still waiting. Complete your order in the next 48 hours.",
        ]),
        sms: None,
    },
    Builtin {
        key: "ecommerce-flash-sale",
        niche: "ecommerce",
        name: "Flash sale",
        description: "A time-boxed sale over email and SMS.",
        goal: "Sale revenue",
        kind: "message",
        channels: &["email", "sms"],
        platforms: &[],
        email: Some([
            "24 hours only: the flash sale is on",
            "Ends tomorrow at midnight",
            "<h1>Flash sale</h1>\n<p>{{ contact.first_name | default(\"Hi\") }}, everything is marked down for the next 24 hours.</p>",
            "Flash sale\n\n{{ contact.first_name | default(\"Hi\") }}, everything is marked down for the next 24 hours.",
        ]),
        sms: Some(
            "Flash sale for 24h only, {{ contact.first_name | default(\"friend\") }}. Reply STOP to opt out.",
        ),
    },
    Builtin {
        key: "saas-trial-ending",
        niche: "saas",
        name: "Trial ending",
        description: "Remind trial users before the trial ends.",
        goal: "Trial-to-paid conversion",
        kind: "message",
        channels: &["email"],
        platforms: &[],
        email: Some([
            "Your trial ends in 3 days",
            "Keep everything you set up",
            "<p>Hi {{ contact.first_name | default(\"there\") }},</p>\n<p>Your trial ends in 3 days. Choose a plan to keep your workspace and data.</p>",
            "Hi {{ contact.first_name | default(\"there\") }},\n\nYour trial ends in 3 days. Choose a plan to keep your workspace and data.",
        ]),
        sms: None,
    },
    Builtin {
        key: "saas-feature-announcement",
        niche: "saas",
        name: "Feature announcement",
        description: "Announce a new feature to active users.",
        goal: "Feature adoption",
        kind: "message",
        channels: &["email"],
        platforms: &[],
        email: Some([
            "New: a faster way to get work done",
            "What's new this month",
            "<p>Hi {{ contact.first_name | default(\"there\") }}, here is what we shipped this month.</p>",
            "Hi {{ contact.first_name | default(\"there\") }}, here is what we shipped this month.",
        ]),
        sms: None,
    },
    Builtin {
        key: "local-business-event-invite",
        niche: "local_business",
        name: "In-store event invitation",
        description: "Invite nearby customers to an event at your shop.",
        goal: "Event attendance",
        kind: "message",
        channels: &["email", "sms"],
        platforms: &[],
        email: Some([
            "You're invited, {{ contact.first_name | default(\"neighbour\") }}",
            "Drinks, demos and a little discount",
            "<p>Hi {{ contact.first_name | default(\"there\") }}, join us in store this Saturday for demos and a little discount.</p>",
            "Hi {{ contact.first_name | default(\"there\") }}, join us in store this Saturday for demos and a little discount.",
        ]),
        sms: Some(
            "Hi {{ contact.first_name | default(\"there\") }}, join us in store this Saturday! Reply STOP to opt out.",
        ),
    },
    Builtin {
        key: "local-business-review-request",
        niche: "local_business",
        name: "Review request",
        description: "Ask recent customers for a review.",
        goal: "New reviews",
        kind: "message",
        channels: &["sms"],
        platforms: &[],
        email: None,
        sms: Some(
            "Thanks for visiting, {{ contact.first_name | default(\"friend\") }}! Would you leave us a quick review?",
        ),
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::domain::input::{CampaignType, validate_channels, validate_platforms};
    use crate::domain::template::{
        Content, EmailContent, Limits, RenderContact, Renderer, SmsContent,
    };

    fn content(b: &Builtin) -> Content {
        Content {
            email: b
                .email
                .map(|[subject, preheader, html, text]| EmailContent {
                    subject: subject.into(),
                    preheader: preheader.into(),
                    html_body: html.into(),
                    text_body: text.into(),
                }),
            sms: b.sms.map(|text| SmsContent { text: text.into() }),
            webhook: None,
        }
    }

    #[test]
    fn every_builtin_is_valid_and_renders() {
        let renderer = Renderer::new(Limits::default());
        let mut keys = HashSet::new();
        for b in BUILTINS {
            assert!(keys.insert(b.key), "duplicate key {}", b.key);
            assert!(is_niche(b.niche), "{}: niche {}", b.key, b.niche);
            let c = content(b);
            assert!(renderer.validate(&c).is_empty(), "{}", b.key);
            let kind = CampaignType::parse(b.kind).expect("kind");
            let channels: Vec<String> = b.channels.iter().map(|s| (*s).to_owned()).collect();
            let platforms: Vec<String> = b.platforms.iter().map(|s| (*s).to_owned()).collect();
            assert!(validate_platforms(kind, &platforms).is_ok(), "{}", b.key);
            if kind == CampaignType::Message {
                assert!(
                    validate_channels(kind, &channels, &c).is_empty(),
                    "{}",
                    b.key
                );
            }
            let contact = RenderContact {
                contact_id: "c".into(),
                first_name: Some("Ada".into()),
                ..Default::default()
            };
            let extra = serde_json::json!({"campaign": {"name": b.name}});
            if let Some(e) = &c.email {
                let out = renderer.render_email(e, &contact, &extra).expect("renders");
                assert!(
                    out.text_body.contains("Ada") || out.subject.contains("Ada"),
                    "{}",
                    b.key
                );
            }
            if let Some(s) = &c.sms {
                renderer.render_sms(s, &contact, &extra).expect("renders");
            }
        }
        for niche in NICHES {
            assert!(
                BUILTINS.iter().any(|b| b.niche == niche),
                "no template for {niche}"
            );
        }
    }

    #[test]
    fn ids_round_trip_and_unknown_ids_are_none() {
        let b = &BUILTINS[0];
        assert_eq!(builtin(&b.id()).map(|x| x.key), Some(b.key));
        assert!(builtin("builtin-nope").is_none());
        assert!(builtin(b.key).is_none());
        assert!(is_age_restricted("adult_creator") && !is_age_restricted("fitness"));
    }
}
