output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.kubernetes.cluster_name}"
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = module.kubernetes.cluster_name
}

output "vpc_cidr" {
  description = "VPC CIDR (narrow the chart's networkPolicy.egress.*.to to it)."
  value       = module.network.vpc_cidr_block
}

output "data_subnet_cidrs" {
  description = "CIDRs of the data subnets where PostgreSQL, Redis and RabbitMQ live."
  value       = module.network.data_subnet_cidrs
}

output "nat_public_ips" {
  description = "Egress IPs of the cluster."
  value       = module.network.nat_public_ips
}

output "postgres_endpoint" {
  description = "RDS endpoint."
  value       = module.postgres.endpoint
}

output "postgres_instance_identifier" {
  description = "RDS instance identifier (restore drills)."
  value       = module.postgres.instance_identifier
}

output "redis_endpoint" {
  description = "ElastiCache primary endpoint."
  value       = module.redis.primary_endpoint
}

output "rabbitmq_endpoint" {
  description = "Amazon MQ AMQPS endpoint."
  value       = module.rabbitmq.amqps_endpoint
}

output "rabbitmq_console_url" {
  description = "Amazon MQ management console (from inside the VPC)."
  value       = module.rabbitmq.console_url
}

output "asset_bucket" {
  description = "S3 bucket for assets."
  value       = module.object_storage.bucket_name
}

output "runtime_secret_name" {
  description = "Secrets Manager secret to sync into the chart's secrets.existingSecret."
  value       = module.secrets.runtime_secret_name
}

output "external_secrets_role_arn" {
  description = "IRSA role for External Secrets Operator."
  value       = aws_iam_role.external_secrets.arn
}

output "app_role_arn" {
  description = "IRSA role for the mesh's ServiceAccount (serviceAccount.annotations.eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.app.arn
}

output "helm_values_hint" {
  description = "Values the chart needs from this environment."
  value = {
    "config.crypto.activeKeyId"                                 = module.secrets.crypto_active_key_id
    "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn" = aws_iam_role.app.arn
    "networkPolicy.egress.postgres.to[0].ipBlock.cidr"          = module.network.vpc_cidr_block
  }
}
