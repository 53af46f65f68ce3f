#!/usr/bin/env bash
# Entry point of the opensearch service in docker-compose.secure.yml: writes the internal users
# (admin, and spanline, the ingester's, limited to the jaeger-* indices and their templates) with
# bcrypt hashes of the passwords mounted as secrets, so no password or hash is in the repository,
# then starts OpenSearch as the image does. The security index is created from these files on the
# first start (plugins.security.allow_default_init_securityindex).
set -euo pipefail
cd /usr/share/opensearch
hash() { plugins/opensearch-security/tools/hash.sh -p "$(cat "$1")" | tail -n 1; }
sec=config/opensearch-security
cat >"$sec/internal_users.yml" <<USERS
_meta: { type: internalusers, config_version: 2 }
admin:
  hash: "$(hash /run/secrets/spanline/opensearch/admin-password)"
  backend_roles: [admin]
spanline:
  hash: "$(hash /run/secrets/spanline/opensearch/password)"
  opendistro_security_roles: [spanline_ingester]
USERS
if ! grep -q '^spanline_ingester:' "$sec/roles.yml"; then
  cat >>"$sec/roles.yml" <<'ROLE'
spanline_ingester:
  cluster_permissions: [cluster_monitor, cluster_manage_index_templates, "indices:data/write/bulk"]
  index_permissions:
    - index_patterns: ["jaeger-*", "*-jaeger-*"]
      allowed_actions: [crud, create_index, manage]
ROLE
fi
exec ./opensearch-docker-entrypoint.sh opensearch
