#!/bin/sh
# A server (`--port`): busybox httpd in the foreground on $PORT, serving /app/www and its cgi-bin.
echo "serving /app/www on port $PORT"
exec httpd -f -v -p "$PORT" -h /app/www
