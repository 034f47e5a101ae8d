# shoal: an NSQ-compatible broker whose nodes find each other by SWIM gossip.
#
#   docker build -t shoal .
#   docker run -p 4150:4150 -p 4151:4151 -p 4161:4161 -v shoal-data:/data shoal
#
# Two stages: the first builds the wheel, the second installs only the wheel
# and its dependencies on the slim base, so no build tooling ships.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home shoal \
    && mkdir /data && chown shoal:shoal /data
USER 10001:10001
WORKDIR /data
# Disk queues, metadata and the stored member name live here.
VOLUME ["/data"]
# 4150 NSQ TCP, 4151 nsqd HTTP (+ /metrics, the cluster page), 4160 gossip
# (UDP and TCP), 4161 nsqlookupd HTTP.
EXPOSE 4150/tcp 4151/tcp 4160/tcp 4160/udp 4161/tcp
# /ping answers OK while the node is healthy (500 after a failed disk write).
# The slim image has no curl; Python is there anyway.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:4151/ping', timeout=2)"]
ENTRYPOINT ["shoal", "node", "--data-path", "/data"]
