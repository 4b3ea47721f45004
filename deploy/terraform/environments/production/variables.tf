variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "environment" {
  description = "Environment name (used in resource names and secret paths)."
  type        = string
  default     = "production"
}

variable "azs" {
  description = "Availability zones (three: Amazon MQ's cluster needs three subnets)."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
}

variable "vpc_cidr" {
  description = "CIDR of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "kubernetes_version" {
  description = "EKS version."
  type        = string
  default     = "1.33"
}

variable "cluster_admin_principal_arns" {
  description = "IAM roles granted cluster-admin (SRE role, CI deploy role)."
  type        = list(string)
}

variable "cluster_endpoint_public_access" {
  description = "Expose the Kubernetes API publicly (restricted to cluster_public_access_cidrs)."
  type        = bool
  default     = false
}

variable "cluster_public_access_cidrs" {
  description = "CIDRs allowed to reach a public Kubernetes API endpoint (office/VPN egress)."
  type        = list(string)
  default     = []
}

variable "asset_bucket_name" {
  description = "Globally unique name of the asset bucket."
  type        = string
}

variable "web_origins" {
  description = "Origins of the web frontend (CORS for presigned uploads)."
  type        = list(string)
  default     = []
}

variable "postgres_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.m7g.large"
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.m7g.large"
}

variable "redis_tls" {
  description = "TLS + AUTH for Redis (rediss://). Requires the binary's redis client to be built with TLS support."
  type        = bool
  default     = true
}

variable "rabbitmq_instance_type" {
  description = "Amazon MQ instance type."
  type        = string
  default     = "mq.m5.large"
}

variable "app_namespace" {
  description = "Kubernetes namespace of the Helm release."
  type        = string
  default     = "campaign-os"
}

variable "app_service_account" {
  description = "ServiceAccount of the Helm release (the chart's fullname: `campaign-os` for a release named campaign-os)."
  type        = string
  default     = "campaign-os"
}

variable "external_secrets_service_account" {
  description = "namespace:name of External Secrets Operator's ServiceAccount."
  type        = string
  default     = "external-secrets:external-secrets"
}

variable "provider_secret_names" {
  description = "Third-party credentials to create empty secrets for."
  type        = list(string)
  default     = ["stripe", "gemini", "openai", "ayrshare", "smtp"]
}

variable "rds_ca_bundle_path" {
  description = "Path, inside the pods, of the Amazon RDS CA bundle (mounted by the chart's extraVolumes) used for sslmode=verify-full."
  type        = string
  default     = "/etc/campaign-os/tls/rds-global-bundle.pem"
}
