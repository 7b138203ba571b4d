# Policy for the breakglass bot's own Vault/OpenBao token: the least it needs.
#
#   vault policy write breakglass-bot breakglass-bot.hcl
#   vault token create -policy=breakglass-bot -period=24h -orphan   (or AppRole / Kubernetes auth)
#
# Each grant is issued through a child token of the bot's token (TTL = the grant), so revoking
# that child by its accessor ends every lease the grant produced. Adjust the `database/` mount
# paths if your resources use other mounts or engines.

# Per-grant child tokens; their revocation and inspection by accessor (accessors are not secrets).
path "auth/token/create" {
  capabilities = ["create", "update"]
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# vault-database: dynamic credentials from any role of the `database` mount.
path "database/creds/*" {
  capabilities = ["read"]
}

# Lease inspection; renewal shortens a new lease to the grant's duration; early revocation.
path "sys/leases/lookup" {
  capabilities = ["update"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}

# Response wrapping (also in Vault's default policy; listed so the bot works without it).
path "sys/wrapping/wrap" {
  capabilities = ["update"]
}
path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}
path "sys/wrapping/lookup" {
  capabilities = ["update"]
}
