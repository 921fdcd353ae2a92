# One image for every engine process; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY workers workers
COPY sql sql
COPY examples examples
RUN pip install --no-cache-dir .
ENTRYPOINT ["engine"]
