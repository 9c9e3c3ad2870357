#!/bin/bash
# COPY of the seed's restore-backup.sh (seed 000, "6. Restore Procedure") for tests/seeds.rs.
# Verbatim except these adaptations (nothing else differs from the seed):
#   A1 `docker compose` (v2 plugin) -> `docker-compose -p "$COMPOSE_PROJECT_NAME"` (the test
#      machine has only docker-compose 1.29; the project name is the test run's).
#   A2 volume prefix `claude-remote-runner_` -> `${COMPOSE_PROJECT_NAME}_` (the test's project).
#   A3 image `alpine` -> `coffer-test/busybox:latest` (no image can be pulled).
#   A4 `read -p` is kept; the test answers it by piping `yes yes` into the script.
#   B1 SEED BUG FIX (step 5): the seed runs
#        -v $(pwd):/backup ... sh -c "cd / && tar xzf /backup/$(basename $BACKUP_FILE)"
#      which cannot work with the old tool's archives either: (a) with the documented call
#      `./restore-backup.sh backups/claude-backup-....tar.gz` the archive is at
#      /backup/backups/<name>, not /backup/<name> ("tar: can't open"; with set -e the script
#      stops after step 4 has already deleted both volumes); (b) the archive's entries are
#      `backup/workspace/...`, so `cd / && tar x` writes them into /backup/workspace/ (the
#      bind-mounted project directory), never into the volumes mounted at /target/... .
#      Fixed by the one-line change `cd /target && tar xzf /backup/$BACKUP_FILE --strip-components=1`.
# restore-backup.sh

set -e  # Exit on error

BACKUP_FILE=$1

if [ -z "$BACKUP_FILE" ]; then
  echo "Usage: ./restore-backup.sh backups/claude-backup-YYYYMMDD.tar.gz"
  exit 1
fi

if [ ! -f "$BACKUP_FILE" ]; then
  echo "Error: Backup file not found: $BACKUP_FILE"
  exit 1
fi

echo "âš ï¸  WARNING: This will restore from backup and overwrite current data!"
echo "Backup file: $BACKUP_FILE"
read -p "Continue? (yes/no): " confirm

if [ "$confirm" != "yes" ]; then
  echo "Restore cancelled"
  exit 0
fi

echo "1. Stopping containers..."
docker-compose -p "$COMPOSE_PROJECT_NAME" down

echo "2. Creating safety backup of current state..."
TIMESTAMP=$(date +%Y%m%d-%H%M%S)
docker run --rm \
  -v ${COMPOSE_PROJECT_NAME}_workspace:/source/workspace:ro \
  -v ${COMPOSE_PROJECT_NAME}_claude-config:/source/claude-config:ro \
  -v $(pwd)/backups:/backup \
  coffer-test/busybox:latest \
  tar czf /backup/pre-restore-backup-$TIMESTAMP.tar.gz -C /source .

echo "3. Removing current volumes..."
docker volume rm ${COMPOSE_PROJECT_NAME}_workspace || true
docker volume rm ${COMPOSE_PROJECT_NAME}_claude-config || true

echo "4. Recreating volumes..."
docker volume create ${COMPOSE_PROJECT_NAME}_workspace
docker volume create ${COMPOSE_PROJECT_NAME}_claude-config

echo "5. Restoring data from backup..."
docker run --rm \
  -v ${COMPOSE_PROJECT_NAME}_workspace:/target/workspace \
  -v ${COMPOSE_PROJECT_NAME}_claude-config:/target/claude-config \
  -v $(pwd):/backup \
  coffer-test/busybox:latest \
  sh -c "cd /target && tar xzf /backup/$BACKUP_FILE --strip-components=1"

echo "6. Restarting containers..."
docker-compose -p "$COMPOSE_PROJECT_NAME" up -d

echo "7. Waiting for services to be healthy..."
sleep 10

echo "8. Verifying services..."
docker-compose -p "$COMPOSE_PROJECT_NAME" ps

echo "âœ… Restore complete!"
echo "Pre-restore backup saved as: backups/pre-restore-backup-$TIMESTAMP.tar.gz"
