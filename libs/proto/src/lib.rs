//! Generated protobuf/gRPC code for every Campaign OS package, plus the descriptor set the
//! gateway transcodes from and that gRPC reflection serves.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

pub mod common {
    pub mod v1 {
        tonic::include_proto!("campaignos.common.v1");
    }
}

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("campaignos.identity.v1");
    }
}

pub mod billing {
    pub mod v1 {
        tonic::include_proto!("campaignos.billing.v1");
    }
}

pub mod segmentation {
    pub mod v1 {
        tonic::include_proto!("campaignos.segmentation.v1");
    }
}

pub mod campaigns {
    pub mod v1 {
        tonic::include_proto!("campaignos.campaigns.v1");
    }
}

pub mod publishing {
    pub mod v1 {
        tonic::include_proto!("campaignos.publishing.v1");
    }
}

/// Serialized `FileDescriptorSet` of every compiled proto (with imports).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("campaignos_descriptor");

/// The descriptor pool decoded once; used for transcoding, OpenAPI and method policies.
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set is produced by build.rs and always decodes")
    })
}

/// Full name of the method-policy extension in common.proto.
pub const POLICY_EXTENSION: &str = "campaignos.common.v1.policy";
/// Full name of google.api.http.
pub const HTTP_EXTENSION: &str = "google.api.http";

/// Reads `(campaignos.common.v1.policy)` off a method; methods without it get the default
/// policy (authenticated, no specific permission).
pub fn method_policy(method: &prost_reflect::MethodDescriptor) -> common::v1::MethodPolicy {
    extension_as(method, POLICY_EXTENSION).unwrap_or_default()
}

/// Reads `(google.api.http)` off a method, if it has one.
pub fn http_rule(method: &prost_reflect::MethodDescriptor) -> Option<google::api::HttpRule> {
    extension_as(method, HTTP_EXTENSION)
}

fn extension_as<T: prost::Message + Default>(
    method: &prost_reflect::MethodDescriptor,
    extension: &str,
) -> Option<T> {
    let ext = method.parent_pool().get_extension_by_name(extension)?;
    let options = method.options();
    if !options.has_extension(&ext) {
        return None;
    }
    let value = options.get_extension(&ext);
    let message = value.as_message()?;
    message.transcode_to::<T>().ok()
}

/// Every method of every `campaignos.*` service, keyed by its gRPC path
/// (`/campaignos.identity.v1.IdentityService/Login`).
pub fn grpc_path(method: &prost_reflect::MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_http_rules_are_readable_from_the_descriptor_set() {
        let pool = descriptor_pool();
        let svc = pool
            .get_service_by_name("campaignos.identity.v1.IdentityService")
            .expect("identity service in descriptor set");
        let register = svc.methods().find(|m| m.name() == "Register").unwrap();
        let policy = method_policy(&register);
        assert!(policy.public);
        assert_eq!(policy.success_status, 201);
        let rule = http_rule(&register).expect("register has an http rule");
        assert_eq!(
            rule.pattern,
            Some(google::api::http_rule::Pattern::Post(
                "/v1/auth/register".into()
            ))
        );
        let me = svc.methods().find(|m| m.name() == "GetMe").unwrap();
        assert!(!method_policy(&me).public);
        let internal = svc
            .methods()
            .find(|m| m.name() == "AuthenticateApiKey")
            .unwrap();
        assert!(http_rule(&internal).is_none());
        assert!(method_policy(&internal).internal);
        assert_eq!(
            grpc_path(&me),
            "/campaignos.identity.v1.IdentityService/GetMe"
        );
    }
}
