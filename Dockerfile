# The Claimcheck image: one image for every process (`claimcheck api|worker|scheduler|migrate`).
# docker-compose.yml builds it; `docker build -t claimcheck .` does too.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ENVIRONMENT=production \
    DATA_DIR=/var/lib/claimcheck

RUN groupadd --system --gid 10001 claimcheck \
    && useradd --system --uid 10001 --gid claimcheck --home-dir /app --shell /usr/sbin/nologin claimcheck \
    && mkdir -p /app /var/lib/claimcheck/gcs \
    && chown -R claimcheck:claimcheck /var/lib/claimcheck

WORKDIR /app

# Dependencies first, in a layer of their own: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself. Installed in place (editable) so that migrations/, which is not a Python
# package, stays beside service/ where `claimcheck migrate` looks for it. Its bytecode is compiled
# here, once: with PYTHONDONTWRITEBYTECODE (and /app not writable by the claimcheck user) every
# process would otherwise compile its modules from source at each start (13 % of the instructions a
# worker runs to its first fork); pip compiled the dependencies' already.
COPY README.md ./
COPY service ./service
COPY callbacks ./callbacks
COPY observability ./observability
COPY migrations ./migrations
RUN pip install --no-deps --editable . \
    && python -m compileall -q service callbacks observability \
    && claimcheck --help > /dev/null

USER claimcheck
EXPOSE 8000 9464
CMD ["claimcheck", "api"]
