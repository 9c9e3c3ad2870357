#!/bin/bash
# COPY of the seed's restore-workspace-only.sh (seed 000, "7. Partial Restore") for
# tests/seeds.rs. Verbatim except these adaptations (nothing else differs from the seed):
#   A1 `docker compose` (v2 plugin) -> `docker-compose -p "$COMPOSE_PROJECT_NAME"` (the test
#      machine has only docker-compose 1.29; the project name is the test run's).
#   A2 volume prefix `claude-remote-runner_` -> `${COMPOSE_PROJECT_NAME}_` (the test's project).
#   A3 image `alpine` -> `coffer-test/busybox:latest` (no image can be pulled).
# restore-workspace-only.sh

BACKUP_FILE=$1

if [ -z "$BACKUP_FILE" ]; then
  echo "Usage: ./restore-workspace-only.sh backups/claude-backup-YYYYMMDD.tar.gz"
  exit 1
fi

echo "Extracting workspace files from backup..."

# Extract to temporary directory
mkdir -p /tmp/restore-workspace
tar xzf $BACKUP_FILE -C /tmp/restore-workspace backup/workspace/

echo "Restoring workspace volume..."
docker run --rm \
  -v ${COMPOSE_PROJECT_NAME}_workspace:/target \
  -v /tmp/restore-workspace/backup/workspace:/source:ro \
  coffer-test/busybox:latest \
  sh -c "rm -rf /target/* && cp -a /source/. /target/"

echo "Cleaning up..."
rm -rf /tmp/restore-workspace

echo "âœ… Workspace restored!"
docker-compose -p "$COMPOSE_PROJECT_NAME" restart claudebox-web telegram-bot
