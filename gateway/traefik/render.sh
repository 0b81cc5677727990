#!/bin/sh
# The gateway's entry point in its image (deploy/gateway.Dockerfile): fills traefik.yml's
# ${NAME} placeholders from the environment, as the dev runner does under `make run`, then
# runs Traefik with the result.
set -eu
config_dir="${GATEWAY_CONFIG_DIR:-/etc/traefik}"
rendered="${GATEWAY_RENDERED_CONFIG:-/tmp/traefik.yml}"
cp "$config_dir/traefik.yml" "$rendered"
for name in $(grep -o '\${[A-Z_]*}' "$config_dir/traefik.yml" | tr -d '${}' | sort -u); do
  # $name is [A-Z_]* (the grep above), so eval reads that variable and nothing else.
  if eval "[ -z \"\${$name+set}\" ]"; then
    echo "gateway: $name is not set (traefik.yml needs it)" >&2
    exit 1
  fi
  eval "value=\${$name}"
  if [ "$name" = GATEWAY_TRUSTED_PROXIES ]; then
    # Items of a YAML list: each quoted (one starting with "::" would not parse bare), split
    # on commas or spaces; an address or range is hex digits, dots, colons and a slash.
    if printf '%s' "$value" | grep -q '[^0-9A-Fa-f.:/, ]'; then
      echo "gateway: GATEWAY_TRUSTED_PROXIES holds something not an address or range" >&2
      exit 1
    fi
    value=$(printf '%s' "$value" | tr ', ' '\n\n' | sed '/^$/d; s/.*/"&"/' | paste -sd, -)
  fi
  # The value goes into sed's replacement: escape its own special characters first.
  escaped=$(printf '%s' "$value" | sed 's/[\\|&]/\\&/g')
  sed -i "s|\${$name}|$escaped|g" "$rendered"
done
# Traefik reads its local plugins (plugins-local/, see traefik.yml) from its working directory.
cd "$config_dir"
exec traefik --configFile="$rendered"
