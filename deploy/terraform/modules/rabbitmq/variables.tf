variable "name" {
  description = "Broker name prefix."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the broker."
  type        = string
}

variable "subnet_ids" {
  description = "Isolated data subnets: three for a cluster, the first is used by a single instance."
  type        = list(string)
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed on AMQPS 5671 and the management API 443 (the EKS cluster security group)."
  type        = list(string)
}

variable "engine_version" {
  description = "RabbitMQ version on Amazon MQ."
  type        = string
  default     = "3.13"
}

variable "instance_type" {
  description = "Broker instance type."
  type        = string
  default     = "mq.m5.large"
}

variable "deployment_mode" {
  description = "CLUSTER_MULTI_AZ (three nodes, quorum queues survive an AZ) or SINGLE_INSTANCE (non-production)."
  type        = string
  default     = "CLUSTER_MULTI_AZ"

  validation {
    condition     = contains(["CLUSTER_MULTI_AZ", "SINGLE_INSTANCE"], var.deployment_mode)
    error_message = "deployment_mode must be CLUSTER_MULTI_AZ or SINGLE_INSTANCE."
  }
}

variable "username" {
  description = "Broker user of the mesh."
  type        = string
  default     = "campaign_os"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
