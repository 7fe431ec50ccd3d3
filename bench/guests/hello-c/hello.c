/*
 * The smallest useful wasi:http component: every request gets 200 "Hello, world!\n". Written in C
 * against bindings that wit-bindgen generates from the wasi:http proxy world, with no WASI preview1
 * underneath, so the component imports only the few wasi:http and wasi:io functions it calls.
 * Build with examples/build.sh bench-guests.
 */
#include "proxy.h"

static const char GREETING[] = "Hello, world!\n";

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    wasi_http_types_incoming_request_drop_own(request);

    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(wasi_http_types_constructor_fields());
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
    proxy_list_u8_t contents = {.ptr = (uint8_t *)GREETING, .len = sizeof GREETING - 1};
    wasi_io_streams_stream_error_t error;
    if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(stream), &contents, &error)) {
        __builtin_trap();
    }
    wasi_io_streams_output_stream_drop_own(stream);

    wasi_http_types_error_code_t finish_error;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_error)) {
        __builtin_trap();
    }
}
