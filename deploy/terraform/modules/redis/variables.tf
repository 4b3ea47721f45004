variable "name" {
  description = "Identifier prefix."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cache."
  type        = string
}

variable "subnet_ids" {
  description = "Isolated data subnets."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed on 6379 (the EKS cluster security group)."
  type        = list(string)
}

variable "engine_version" {
  description = "Redis OSS engine version."
  type        = string
  default     = "7.1"
}

variable "node_type" {
  description = "Cache node type."
  type        = string
  default     = "cache.m7g.large"
}

variable "replicas" {
  description = "Replicas besides the primary, each in another AZ (automatic failover needs at least one)."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas >= 1 && var.replicas <= 5
    error_message = "replicas must be between 1 and 5."
  }
}

variable "transit_encryption_enabled" {
  description = <<-EOT
    TLS between clients and Redis (rediss://) plus an AUTH token. Keep it on; it needs the binary's
    redis client built with TLS support (redis crate feature tokio-rustls-comp). Without TLS the
    AUTH token is not set either.
  EOT
  type        = bool
  default     = true
}

variable "snapshot_retention_days" {
  description = "Daily snapshots kept (rate-limit and idempotency state is rebuildable, but keep a day)."
  type        = number
  default     = 1
}

variable "log_retention_days" {
  description = "Retention of the slow log in CloudWatch."
  type        = number
  default     = 365
}

variable "kms_key_arn" {
  description = "KMS key for data at rest and logs. Null creates one."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
