# Amazon MQ for RabbitMQ: private, encrypted at rest, AMQPS only (5671), general logs in
# CloudWatch, three-node Multi-AZ cluster. The `cos.events` exchange, queues, delay and
# dead-letter queues are declared by the services themselves at start-up.

locals {
  subnet_ids = var.deployment_mode == "SINGLE_INSTANCE" ? [var.subnet_ids[0]] : slice(var.subnet_ids, 0, 3)
}

resource "aws_security_group" "this" {
  name        = "${var.name}-rabbitmq"
  description = "RabbitMQ for ${var.name}: AMQPS and management from the cluster only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-rabbitmq" })
}

resource "aws_vpc_security_group_ingress_rule" "amqps" {
  for_each = toset(var.allowed_security_group_ids)

  security_group_id            = aws_security_group.this.id
  description                  = "AMQPS from ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = 5671
  to_port                      = 5671
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_ingress_rule" "management" {
  for_each = toset(var.allowed_security_group_ids)

  security_group_id            = aws_security_group.this.id
  description                  = "Management API from ${each.value} (operators via kubectl port-forward/bastion)"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = each.value
}

resource "random_password" "broker" {
  length  = 40
  special = false
}

resource "aws_mq_broker" "this" {
  # checkov:skip=CKV_AWS_209:Amazon MQ for RabbitMQ only supports AWS-owned keys (CMKs are ActiveMQ-only)
  broker_name        = "${var.name}-rabbitmq"
  engine_type        = "RabbitMQ"
  engine_version     = var.engine_version
  host_instance_type = var.instance_type
  deployment_mode    = var.deployment_mode

  subnet_ids          = local.subnet_ids
  security_groups     = [aws_security_group.this.id]
  publicly_accessible = false

  auto_minor_version_upgrade = true
  apply_immediately          = false

  # Amazon MQ for RabbitMQ encrypts storage with an AWS-owned key; customer managed keys are
  # only available for ActiveMQ brokers.
  encryption_options {
    use_aws_owned_key = true
  }

  logs {
    general = true
  }

  maintenance_window_start_time {
    day_of_week = "SUNDAY"
    time_of_day = "05:00"
    time_zone   = "UTC"
  }

  user {
    username = var.username
    password = random_password.broker.result
  }

  tags = var.tags

  lifecycle {
    # Rotated out of band (docs/runbooks/leaked-secret.md).
    ignore_changes = [user]
  }
}
