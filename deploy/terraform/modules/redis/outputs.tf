output "primary_endpoint" {
  description = "Host of the primary (follows failover)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  description = "Redis port."
  value       = aws_elasticache_replication_group.this.port
}

output "tls" {
  description = "Whether clients must use rediss://."
  value       = var.transit_encryption_enabled
}

output "auth_token" {
  description = "Initial AUTH token (empty without TLS)."
  value       = var.transit_encryption_enabled ? random_password.auth.result : ""
  sensitive   = true
}

output "url" {
  description = "COS_REDIS__URL for the mesh."
  value = format("%s://%s%s:%d",
    var.transit_encryption_enabled ? "rediss" : "redis",
    var.transit_encryption_enabled ? ":${random_password.auth.result}@" : "",
    aws_elasticache_replication_group.this.primary_endpoint_address,
    aws_elasticache_replication_group.this.port,
  )
  sensitive = true
}
