variable "name" {
  description = "Path prefix of the secrets, e.g. campaign-os/production."
  type        = string
}

variable "database_url" {
  description = "COS_DATABASE__URL (postgres://user:pass@host:5432/db?sslmode=verify-full)."
  type        = string
  sensitive   = true
}

variable "amqp_url" {
  description = "COS_AMQP__URL (amqps://user:pass@host:5671/%2f)."
  type        = string
  sensitive   = true
}

variable "redis_url" {
  description = "COS_REDIS__URL (rediss://:token@host:6379)."
  type        = string
  sensitive   = true
}

variable "crypto_key_id" {
  description = "kid of the initial AES-256-GCM key (COS_CRYPTO__ACTIVE_KEY_ID; the chart's config.crypto.activeKeyId)."
  type        = string
  default     = "k1"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,32}$", var.crypto_key_id))
    error_message = "crypto_key_id must be 1-32 characters of [A-Za-z0-9_-]."
  }
}

variable "provider_secret_names" {
  description = "Empty secrets created for third-party credentials that operators fill in (e.g. stripe, gemini, ayrshare, smtp)."
  type        = list(string)
  default     = []
}

variable "recovery_window_days" {
  description = "Days a deleted secret can be restored."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
