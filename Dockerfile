# One image for every engine process; docker-compose.yml picks the command.
# Dependencies are installed from constraints.txt (the versions CI tests), and the processes run as
# an unprivileged user: nothing in the image needs root at run time.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY engine engine
COPY workers workers
COPY sql sql
COPY examples examples
RUN pip install --no-cache-dir -c constraints.txt . \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin engine
USER 10001:10001
ENTRYPOINT ["engine"]
