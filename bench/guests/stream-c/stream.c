/*
 * A wasi:http component that answers the way SDK-built ones do: it reads the request's method, path and
 * headers, sets response headers, and writes a 4 KiB body in pieces through the stream calls an SDK's
 * writer makes (check-write, write, flush, then waiting on the stream's pollable until the flush is done),
 * instead of the single blocking-write-and-flush of the minimal C component next door.
 * Build with examples/build.sh bench-guests.
 */
#include "proxy.h"
#include <string.h>

#define PIECES 8
#define PIECE 512

static uint8_t piece[PIECE];

static proxy_string_t text(const char *s) {
    proxy_string_t out = {.ptr = (uint8_t *)s, .len = strlen(s)};
    return out;
}

static void append(wasi_http_types_borrow_fields_t fields, const char *name, const char *value) {
    proxy_string_t n = text(name);
    wasi_http_types_field_value_t v = {.ptr = (uint8_t *)value, .len = strlen(value)};
    wasi_http_types_header_error_t error;
    if (!wasi_http_types_method_fields_append(fields, &n, &v, &error)) {
        __builtin_trap();
    }
}

/* Waits until the stream can take more, as a writer does between its writes and after its flush. */
static uint64_t wait_writable(wasi_io_streams_borrow_output_stream_t stream) {
    for (;;) {
        uint64_t room = 0;
        wasi_io_streams_stream_error_t error;
        if (!wasi_io_streams_method_output_stream_check_write(stream, &room, &error)) {
            __builtin_trap();
        }
        if (room > 0) {
            return room;
        }
        wasi_io_streams_own_pollable_t ready = wasi_io_streams_method_output_stream_subscribe(stream);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
        wasi_io_poll_pollable_drop_own(ready);
    }
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    wasi_http_types_borrow_incoming_request_t borrowed =
        wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(borrowed, &method);
    proxy_string_t path;
    bool has_path = wasi_http_types_method_incoming_request_path_with_query(borrowed, &path);
    wasi_http_types_own_headers_t headers = wasi_http_types_method_incoming_request_headers(borrowed);
    wasi_http_types_list_tuple2_field_name_field_value_t entries;
    wasi_http_types_method_fields_entries(wasi_http_types_borrow_fields(headers), &entries);
    size_t seen = entries.len;
    wasi_http_types_list_tuple2_field_name_field_value_free(&entries);
    wasi_http_types_fields_drop_own(headers);
    if (has_path) {
        proxy_string_free(&path);
    }
    wasi_http_types_method_free(&method);
    wasi_http_types_incoming_request_drop_own(request);

    wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
    append(wasi_http_types_borrow_fields(fields), "content-type", "text/plain; charset=utf-8");
    append(wasi_http_types_borrow_fields(fields), "x-request-headers", seen > 9 ? "many" : "few");
    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(fields);
    wasi_http_types_own_outgoing_body_t body;
    if (!wasi_http_types_method_outgoing_response_body(
            wasi_http_types_borrow_outgoing_response(response), &body)) {
        __builtin_trap();
    }
    wasi_http_types_result_own_outgoing_response_error_code_t ok = {.is_err = false};
    ok.val.ok = response;
    wasi_http_types_static_response_outparam_set(response_out, &ok);

    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                    &stream)) {
        __builtin_trap();
    }
    wasi_io_streams_borrow_output_stream_t out = wasi_io_streams_borrow_output_stream(stream);
    memset(piece, 'x', PIECE - 1);
    piece[PIECE - 1] = '\n';
    wasi_io_streams_stream_error_t error;
    for (int i = 0; i < PIECES; i++) {
        for (size_t sent = 0; sent < PIECE;) {
            uint64_t room = wait_writable(out);
            size_t left = PIECE - sent;
            proxy_list_u8_t contents = {.ptr = piece + sent, .len = room < left ? room : left};
            if (!wasi_io_streams_method_output_stream_write(out, &contents, &error)) {
                __builtin_trap();
            }
            sent += contents.len;
        }
    }
    if (!wasi_io_streams_method_output_stream_flush(out, &error)) {
        __builtin_trap();
    }
    wait_writable(out);
    wasi_io_streams_output_stream_drop_own(stream);

    wasi_http_types_error_code_t finish_error;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_error)) {
        __builtin_trap();
    }
}
