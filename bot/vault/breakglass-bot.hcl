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
# With AppRole or Kubernetes auth the bot logs in again before its token's max TTL, and Vault
# revokes a token's children when it ends: grants issued under the previous token would end
# early. An orphan token role avoids that (create it once as an admin, then give the bot
# VAULT_TOKEN_ROLE=breakglass-grant):
#   vault write auth/token/roles/breakglass-grant orphan=true renewable=false \
#       allowed_policies=<the resources' policies>
# path "auth/token/create/breakglass-grant" {
#   capabilities = ["update"]
# }
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# vault-database: dynamic credentials from any role of the `database` mount (with
# `activity:`, also the bot's own short-lived monitoring users, revoked right after reading).
path "database/creds/*" {
  capabilities = ["read"]
}
# `check-config --online`: that each resource's role exists and that its max_ttl is not
# below the resource's max_duration. Resources with `activity:` and no `dsn`: which
# connection the monitoring role uses. A role holds SQL statements and TTLs, no secret.
path "database/roles/*" {
  capabilities = ["read"]
}
# Resources with `activity:` and no `dsn` only: where the database is, as Vault connects to
# it (the connection_url template; Vault never returns the connection's password). Name the
# connection instead of * to allow less; with a `dsn` in every `activity:`, leave it out.
path "database/config/*" {
  capabilities = ["read"]
}
# `check-config --online` only: the mount's max lease TTL, for roles whose max_ttl is 0.
path "sys/mounts/database/tune" {
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

# `audit: {vault_device: file}` only: the HMACs Vault's audit device writes for each grant's
# token accessor and lease id, so a SIEM can join our trail with Vault's audit log. Name the
# policy's device here (this is the sandbox's, `file`).
path "sys/audit-hash/file" {
  capabilities = ["update"]
}

# Only with `audit: encrypt: transit/keys/breakglass` in the policy: free text (justification,
# deny reasons, review notes) is stored encrypted with that transit key, and decrypted
# only to be shown. Uncomment, with your mount and key name:
#   bao secrets enable transit && bao write -f transit/keys/breakglass
# path "transit/encrypt/breakglass" {
#   capabilities = ["update"]
# }
# path "transit/decrypt/breakglass" {
#   capabilities = ["update"]
# }
