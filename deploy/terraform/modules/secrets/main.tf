# Secrets Manager entries the mesh reads (through External Secrets Operator, which syncs them into
# the Kubernetes Secret named by the chart's secrets.existingSecret):
#
#   <name>/runtime     JSON {COS_DATABASE__URL, COS_AMQP__URL, COS_REDIS__URL, COS_CRYPTO__KEYS,
#                           COS_AUTH__SERVICE_SECRET}
#   <name>/<provider>  one per third-party credential, filled in by operators
#
# Terraform writes the initial values only: rotation is an operator procedure
# (docs/runbooks/leaked-secret.md) and Terraform ignores later changes of the values. The initial
# values are in the Terraform state: keep the state bucket encrypted and access-restricted.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

resource "aws_kms_key" "this" {
  description             = "${var.name} secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${replace(var.name, "/", "-")}-secrets"
  target_key_id = aws_kms_key.this.key_id
}

data "aws_iam_policy_document" "kms" {
  # checkov:skip=CKV_AWS_111:Key policy: "*" means this key; the account root delegates to IAM
  # checkov:skip=CKV_AWS_356:Key policy: "*" means this key (key policies cannot name other resources)
  # checkov:skip=CKV_AWS_109:Key policy: the account root must keep kms:* or the key becomes unmanageable
  statement {
    sid       = "AccountAdmin"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

# AES-256-GCM key ring for secrets at rest (DESIGN section 8): "kid:base64(32 bytes)".
resource "random_bytes" "crypto_key" {
  length = 32
}

# The mesh's shared service secret (COS_AUTH__SERVICE_SECRET): service-to-service calls of
# background jobs (scheduled launches, fan-out, quota) are signed with it, and publishing derives
# its unsubscribe-link key from it. 48 bytes, base64.
resource "random_bytes" "service_secret" {
  length = 48
}

resource "aws_secretsmanager_secret" "runtime" {
  # checkov:skip=CKV2_AWS_57:Connection strings change together with the RDS/MQ/ElastiCache passwords and a rollout; rotated by the runbook procedure (docs/runbooks/leaked-secret.md), not a Lambda
  name                    = "${var.name}/runtime"
  description             = "Campaign OS runtime secrets (database, broker, cache, encryption key ring, service secret)"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "runtime" {
  secret_id = aws_secretsmanager_secret.runtime.id
  secret_string = jsonencode({
    COS_DATABASE__URL = var.database_url
    COS_AMQP__URL     = var.amqp_url
    COS_REDIS__URL    = var.redis_url
    COS_CRYPTO__KEYS  = "${var.crypto_key_id}:${random_bytes.crypto_key.base64}"
    # Rotating it invalidates unsubscribe links in emails already sent (docs/operations.md).
    COS_AUTH__SERVICE_SECRET = random_bytes.service_secret.base64
  })

  lifecycle {
    ignore_changes = [secret_string]
  }
}

resource "aws_secretsmanager_secret" "provider" {
  # checkov:skip=CKV2_AWS_57:Third-party API keys are issued by the provider (Stripe, Gemini, ...); rotated at the provider by the runbook procedure
  for_each = toset(var.provider_secret_names)

  name                    = "${var.name}/${each.value}"
  description             = "Campaign OS third-party credential: ${each.value}"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = var.tags
}

# Read access for the secret syncer (External Secrets Operator's IRSA role).
data "aws_iam_policy_document" "read" {
  statement {
    sid     = "ReadCampaignOsSecrets"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = concat(
      [aws_secretsmanager_secret.runtime.arn],
      [for s in aws_secretsmanager_secret.provider : s.arn],
    )
  }
  statement {
    sid       = "DecryptCampaignOsSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_policy" "read" {
  name        = "${replace(var.name, "/", "-")}-secrets-read"
  description = "Read the Campaign OS secrets of ${var.name}"
  policy      = data.aws_iam_policy_document.read.json
  tags        = var.tags
}
