output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "IPv4 CIDR of the VPC (use it to narrow the chart's networkPolicy.egress.*.to)."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "Public subnets (load balancers, NAT gateways)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets (EKS nodes and pods)."
  value       = aws_subnet.private[*].id
}

output "data_subnet_ids" {
  description = "Isolated subnets for PostgreSQL, Redis and RabbitMQ."
  value       = aws_subnet.data[*].id
}

output "data_subnet_cidrs" {
  description = "CIDRs of the data subnets (NetworkPolicy egress targets for the managed services)."
  value       = aws_subnet.data[*].cidr_block
}

output "nat_public_ips" {
  description = "Egress IPs of the cluster (allow-list them at third-party APIs that need it)."
  value       = aws_eip.nat[*].public_ip
}
