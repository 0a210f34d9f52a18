"""The ext_proc messages compiled from protos/ext_proc.proto (scripts/generate-protos): generated code, not edited
by hand. Private to the extproc adapter: the proto package is ``responses_bridge.extproc.v3``, not Envoy's, so the
messages never clash with another package's Envoy stubs in protobuf's descriptor pool (protos/ext_proc.proto)."""
