output "broker_id" {
  description = "Amazon MQ broker id."
  value       = aws_mq_broker.this.id
}

output "amqps_endpoint" {
  description = "amqps://host:5671 endpoint of the broker."
  value       = aws_mq_broker.this.instances[0].endpoints[0]
}

output "console_url" {
  description = "RabbitMQ management console (reachable from inside the VPC)."
  value       = aws_mq_broker.this.instances[0].console_url
}

output "username" {
  description = "Broker user of the mesh."
  value       = var.username
}

output "password" {
  description = "Initial broker password."
  value       = random_password.broker.result
  sensitive   = true
}

output "url" {
  description = "COS_AMQP__URL for the mesh (default vhost)."
  value       = format("amqps://%s:%s@%s/%%2f", var.username, random_password.broker.result, trimprefix(aws_mq_broker.this.instances[0].endpoints[0], "amqps://"))
  sensitive   = true
}
