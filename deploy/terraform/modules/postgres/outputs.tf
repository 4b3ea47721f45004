output "endpoint" {
  description = "Host name of the primary (follows failover)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Database name."
  value       = aws_db_instance.this.db_name
}

output "master_username" {
  description = "Owner role (migrations)."
  value       = aws_db_instance.this.username
}

output "master_password" {
  description = "Initial owner password (stored in Secrets Manager by the secrets module)."
  value       = random_password.master.result
  sensitive   = true
}

output "instance_identifier" {
  description = "RDS identifier (restore drills: aws rds restore-db-instance-to-point-in-time --source-db-instance-identifier ...)."
  value       = aws_db_instance.this.identifier
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.this.id
}

output "kms_key_arn" {
  description = "KMS key of storage and snapshots (needed to copy snapshots across accounts/regions)."
  value       = local.kms_key_arn
}
