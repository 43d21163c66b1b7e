# The smime-proxy daemon (docker-compose.yml's `smime-proxy` service).
FROM python:3.11-slim
WORKDIR /build
COPY pyproject.toml README.md ./
COPY smime_proxy ./smime_proxy
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /var/lib/smime-proxy --shell /usr/sbin/nologin smime \
 && mkdir -p /var/lib/smime-proxy /etc/smime-proxy/secrets \
 && chown smime /var/lib/smime-proxy /etc/smime-proxy/secrets \
 && chmod 700 /etc/smime-proxy/secrets
# secrets/: the cluster key of the compose "cluster" profile (a named volume takes this owner)
# uid 10001 is PROXY_UID in config/upstream/entrypoint.sh (owner of tls/proxy-key.pem).
USER 10001
VOLUME ["/var/lib/smime-proxy"]
ENTRYPOINT ["smime-proxy"]
CMD ["serve", "--config", "/etc/smime-proxy/smime-proxy.yaml"]
