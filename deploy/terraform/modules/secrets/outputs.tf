output "runtime_secret_arn" {
  description = "ARN of the runtime secret (External Secrets remoteRef key)."
  value       = aws_secretsmanager_secret.runtime.arn
}

output "runtime_secret_name" {
  description = "Name of the runtime secret."
  value       = aws_secretsmanager_secret.runtime.name
}

output "provider_secret_arns" {
  description = "ARNs of the third-party credential secrets, by provider."
  value       = { for k, s in aws_secretsmanager_secret.provider : k => s.arn }
}

output "read_policy_arn" {
  description = "IAM policy granting read access to these secrets."
  value       = aws_iam_policy.read.arn
}

output "crypto_active_key_id" {
  description = "Value for the chart's config.crypto.activeKeyId."
  value       = var.crypto_key_id
}

output "kms_key_arn" {
  description = "KMS key encrypting the secrets."
  value       = aws_kms_key.this.arn
}
