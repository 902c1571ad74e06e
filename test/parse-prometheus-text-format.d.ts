// Types for the dev dependency the metrics tests parse exposition text with (it ships none).
declare module 'parse-prometheus-text-format' {
  interface Sample {
    labels?: Record<string, string>;
    value: string;
  }
  interface Family {
    name: string;
    help: string;
    type: string;
    metrics: Array<Sample | { labels?: Record<string, string>; buckets: Record<string, string>; count: string; sum: string }>;
  }
  export default function parsePrometheusTextFormat(text: string): Family[];
}
