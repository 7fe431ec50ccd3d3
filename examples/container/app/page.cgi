#!/bin/sh
# A CGI job (`--cgi`): headers, a blank line, then the body.
printf 'Content-Type: text/html\r\nX-Served-By: container\r\n\r\n'
echo "<p>Hello, ${QUERY_STRING:-world}!</p>"
