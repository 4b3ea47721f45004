variable "name" {
  description = "Name prefix of every resource (e.g. campaign-os-production)."
  type        = string
}

variable "cidr_block" {
  description = "IPv4 CIDR of the VPC. Must be large enough for pods: the VPC CNI gives every pod a VPC address."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr_block, 0))
    error_message = "cidr_block must be a valid IPv4 CIDR."
  }
}

variable "azs" {
  description = "Availability zones to spread over (3 recommended; at least 2 for Multi-AZ databases)."
  type        = list(string)

  validation {
    condition     = length(var.azs) >= 2 && length(var.azs) <= 4
    error_message = "Between two and four availability zones are supported by the subnet plan."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for the whole VPC (cheaper, one AZ is a single point of failure for egress) instead of one per AZ."
  type        = bool
  default     = false
}

variable "flow_log_retention_days" {
  description = "Retention of VPC flow logs in CloudWatch Logs."
  type        = number
  default     = 365
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the flow log group. Null creates a dedicated key."
  type        = string
  default     = null
}

variable "cluster_name" {
  description = "EKS cluster name, for the kubernetes.io/cluster/<name> subnet tags used by load balancers."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
