#!/bin/sh
# A job: the request body on stdin, the request in the environment, the answer on stdout.
echo "hello from a container, $(id -u) on a read-only root"
echo "$REQUEST_METHOD $PATH_INFO?$QUERY_STRING"
printf 'you sent: '
cat
