#!/bin/sh
# A job that reaches out: the body is a URL, fetched through wafer's proxy for this container
# (wget finds it in $http_proxy), which lets through only the function's allowed_outbound_hosts.
wget -q -O- "$(cat)"
