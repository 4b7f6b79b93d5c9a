// The observability settings of the gateway, as the config file's `gateway` section and the
// gateway plugin's `observability` option give them. Types only.

export interface MetricsOptions {
  /** `/metrics` in Prometheus text format. Default on. */
  enabled: boolean
  /** Serve `/metrics` on this port of its own (same host) instead of the gateway's. */
  port?: number
  /** Whether `/metrics` on the gateway's port needs the gateway's credentials. Default `false`. */
  protect: boolean
}

export interface TracingOptions {
  /** OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`); default `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`. Tracing is off without one. */
  endpoint?: string
  /** `service.name` of the spans. Default `OTEL_SERVICE_NAME` or `fastify-mcp-gateway`. */
  serviceName?: string
}

export interface ObservabilityOptions {
  metrics?: Partial<MetricsOptions>
  tracing?: TracingOptions
  /** The status page at `/`. Default on. */
  statusPage?: boolean
}
