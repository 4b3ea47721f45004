output "bucket_name" {
  description = "Asset bucket name."
  value       = aws_s3_bucket.assets.id
}

output "bucket_arn" {
  description = "Asset bucket ARN."
  value       = aws_s3_bucket.assets.arn
}

output "bucket_regional_domain_name" {
  description = "Regional endpoint of the bucket."
  value       = aws_s3_bucket.assets.bucket_regional_domain_name
}

output "kms_key_arn" {
  description = "KMS key of the objects."
  value       = local.kms_key_arn
}

output "app_policy_arn" {
  description = "IAM policy to attach to the storage service's IRSA role."
  value       = aws_iam_policy.app.arn
}

output "access_log_bucket_name" {
  description = "Bucket receiving S3 server access logs."
  value       = aws_s3_bucket.logs.id
}
