variable "bucket_name" {
  description = "Globally unique name of the asset bucket (uploads, brand media, exports)."
  type        = string
}

variable "cors_allowed_origins" {
  description = "Origins of the web app allowed to PUT presigned uploads directly to the bucket."
  type        = list(string)
  default     = []
}

variable "noncurrent_version_expiration_days" {
  description = "Days a deleted/overwritten object version is kept (undo window and restore drills)."
  type        = number
  default     = 90
}

variable "access_log_retention_days" {
  description = "Days S3 server access logs are kept."
  type        = number
  default     = 365
}

variable "replication_destination_bucket_arn" {
  description = "Versioned bucket in another region to replicate assets to (disaster recovery). Null disables replication."
  type        = string
  default     = null
}

variable "replication_destination_kms_key_arn" {
  description = "KMS key of the replication destination bucket."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS. Null creates one."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a non-empty bucket. Never in production."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
