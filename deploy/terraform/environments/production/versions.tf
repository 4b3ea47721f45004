terraform {
  # S3 native state locking (use_lockfile) needs Terraform >= 1.10.
  required_version = ">= 1.10.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.14"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.1"
    }
  }

  # Partial configuration: pass the rest at init time, e.g.
  #   terraform init -backend-config=backend.hcl
  # with bucket, key, region (and optionally kms_key_id) in backend.hcl. The state holds the
  # initial database/broker/cache passwords and the first encryption key: the bucket must be
  # encrypted, versioned and readable only by the deployment role.
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "campaign-os"
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
