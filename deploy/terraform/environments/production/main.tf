# Campaign OS production on AWS: VPC, EKS, RDS PostgreSQL, ElastiCache Redis, Amazon MQ RabbitMQ,
# S3 assets, Secrets Manager, and the IRSA roles the cluster workloads assume.

locals {
  name         = "campaign-os-${var.environment}"
  cluster_name = local.name
  tags = {
    Service = "campaign-os"
  }
}

module "network" {
  source = "../../modules/network"

  name               = local.name
  cluster_name       = local.cluster_name
  cidr_block         = var.vpc_cidr
  azs                = var.azs
  single_nat_gateway = false
  tags               = local.tags
}

module "kubernetes" {
  source = "../../modules/kubernetes"

  name                   = local.cluster_name
  kubernetes_version     = var.kubernetes_version
  vpc_id                 = module.network.vpc_id
  subnet_ids             = module.network.private_subnet_ids
  endpoint_public_access = var.cluster_endpoint_public_access
  public_access_cidrs    = var.cluster_public_access_cidrs
  admin_principal_arns   = var.cluster_admin_principal_arns
  tags                   = local.tags
}

module "postgres" {
  source = "../../modules/postgres"

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.data_subnet_ids
  allowed_security_group_ids = [module.kubernetes.cluster_security_group_id]
  instance_class             = var.postgres_instance_class
  multi_az                   = true
  backup_retention_days      = 14
  deletion_protection        = true
  tags                       = local.tags
}

module "redis" {
  source = "../../modules/redis"

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.data_subnet_ids
  allowed_security_group_ids = [module.kubernetes.cluster_security_group_id]
  node_type                  = var.redis_node_type
  replicas                   = 1
  transit_encryption_enabled = var.redis_tls
  tags                       = local.tags
}

module "rabbitmq" {
  source = "../../modules/rabbitmq"

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.data_subnet_ids
  allowed_security_group_ids = [module.kubernetes.cluster_security_group_id]
  instance_type              = var.rabbitmq_instance_type
  deployment_mode            = "CLUSTER_MULTI_AZ"
  tags                       = local.tags
}

module "object_storage" {
  source = "../../modules/object-storage"

  bucket_name          = var.asset_bucket_name
  cors_allowed_origins = var.web_origins
  tags                 = local.tags
}

module "secrets" {
  source = "../../modules/secrets"

  name = "campaign-os/${var.environment}"
  database_url = format(
    "postgres://%s:%s@%s:%d/%s?sslmode=verify-full&sslrootcert=%s",
    module.postgres.master_username,
    urlencode(module.postgres.master_password),
    module.postgres.endpoint,
    module.postgres.port,
    module.postgres.database_name,
    var.rds_ca_bundle_path,
  )
  amqp_url              = module.rabbitmq.url
  redis_url             = module.redis.url
  provider_secret_names = var.provider_secret_names
  tags                  = local.tags
}

# ---------------------------------------------------------------------------------------------
# IRSA roles
# ---------------------------------------------------------------------------------------------
data "aws_iam_policy_document" "irsa_external_secrets" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [module.kubernetes.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${module.kubernetes.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.external_secrets_service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${module.kubernetes.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "external_secrets" {
  name               = "${local.name}-external-secrets"
  assume_role_policy = data.aws_iam_policy_document.irsa_external_secrets.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "external_secrets" {
  role       = aws_iam_role.external_secrets.name
  policy_arn = module.secrets.read_policy_arn
}

# The mesh's ServiceAccount (annotate it with this role via the chart's serviceAccount.annotations:
# eks.amazonaws.com/role-arn). Only the storage service uses it today (S3); the token is mounted
# only where a service needs AWS APIs.
data "aws_iam_policy_document" "irsa_app" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [module.kubernetes.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${module.kubernetes.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.app_namespace}:${var.app_service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${module.kubernetes.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "app" {
  name               = "${local.name}-app"
  assume_role_policy = data.aws_iam_policy_document.irsa_app.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "app_s3" {
  role       = aws_iam_role.app.name
  policy_arn = module.object_storage.app_policy_arn
}
