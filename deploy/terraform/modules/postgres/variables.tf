variable "name" {
  description = "Identifier prefix (e.g. campaign-os-production)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "subnet_ids" {
  description = "Isolated data subnets (at least two AZs)."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to connect on 5432 (the EKS cluster security group)."
  type        = list(string)
}

variable "engine_version" {
  description = "PostgreSQL major.minor version."
  type        = string
  default     = "16.9"
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.m7g.large"
}

variable "allocated_storage_gb" {
  description = "Initial storage."
  type        = number
  default     = 100
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling."
  type        = number
  default     = 1000
}

variable "database_name" {
  description = "Database the mesh uses (one schema per service inside it)."
  type        = string
  default     = "campaign_os"
}

variable "master_username" {
  description = "Owner of the schemas; runs migrations. Tenant queries switch to the app role (COS_DATABASE__APP_ROLE)."
  type        = string
  default     = "campaign_os"
}

variable "max_connections" {
  description = "Server max_connections. Budget: sum over services of replicas x COS_DATABASE__MAX_CONNECTIONS, plus headroom."
  type        = number
  default     = 500
}

variable "multi_az" {
  description = "Synchronous standby in another AZ with automatic failover."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Automated backups and point-in-time recovery window (1-35 days)."
  type        = number
  default     = 14
}

variable "deletion_protection" {
  description = "Refuse to delete the instance."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "KMS key for storage, Performance Insights and the master secret. Null creates one."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
