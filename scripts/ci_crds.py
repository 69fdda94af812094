"""The schemas of the custom resources deploy/ and the chart use, for the CI scripts
(scripts/ci-packaging, scripts/ci-chart): kubernetes-validate bundles the schemas of Kubernetes'
own kinds only, and the CRDs of the Prometheus Operator and of cert-manager cannot be fetched
here. These schemas hold the fields of PodMonitor, ServiceMonitor and PrometheusRule
(monitoring.coreos.com/v1), Issuer and Certificate (cert-manager.io/v1) that deploy/ and
deploy/helm may use, with their types and formats; any other field fails, so a typo cannot pass.
They are not the upstream CRD schemas: a field used for the first time is added here, from the
CRD's reference."""

# kubernetes-validate bundles the schemas of Kubernetes' own kinds only, and the CRDs of the
# Prometheus Operator cannot be fetched here. These schemas hold the fields of PodMonitor,
# ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1) that deploy/ may use, with their
# types and formats; any other field fails, so a typo cannot pass. They are not the upstream
# CRD schemas.
DURATION = {'type': 'string', 'pattern': r'^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
STRMAP = {'type': 'object', 'additionalProperties': {'type': 'string'}}
SELECTOR = {'type': 'object', 'additionalProperties': False, 'minProperties': 1, 'properties': {
    'matchLabels': STRMAP,
    'matchExpressions': {'type': 'array', 'items': {'type': 'object', 'additionalProperties': False, 'required': ['key', 'operator'], 'properties': {
        'key': {'type': 'string'}, 'operator': {'enum': ['In', 'NotIn', 'Exists', 'DoesNotExist']},
        'values': {'type': 'array', 'items': {'type': 'string'}}}}}}}
NAME = {'type': 'string', 'maxLength': 253, 'pattern': r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'}
METADATA = {'type': 'object', 'additionalProperties': False, 'required': ['name'], 'properties': {
    'name': NAME, 'namespace': NAME, 'labels': STRMAP, 'annotations': STRMAP}}
NAMESPACE_SELECTOR = {'type': 'object', 'additionalProperties': False, 'properties': {
    'any': {'type': 'boolean'}, 'matchNames': {'type': 'array', 'items': {'type': 'string'}}}}
ENDPOINT = {'type': 'object', 'additionalProperties': False, 'required': ['port'], 'properties': {
    'port': {'type': 'string', 'minLength': 1, 'maxLength': 15}, 'path': {'type': 'string', 'pattern': '^/'},
    'scheme': {'enum': ['http', 'https']}, 'interval': DURATION, 'scrapeTimeout': DURATION,
    'honorLabels': {'type': 'boolean'}, 'honorTimestamps': {'type': 'boolean'},
    'relabelings': {'type': 'array', 'items': {'type': 'object', 'additionalProperties': False, 'properties': {
        'sourceLabels': {'type': 'array', 'items': {'type': 'string', 'pattern': '^[a-zA-Z_][a-zA-Z0-9_]*$'}},
        'separator': {'type': 'string'}, 'targetLabel': {'type': 'string'}, 'regex': {'type': 'string'},
        'modulus': {'type': 'integer'}, 'replacement': {'type': 'string'},
        'action': {'enum': ['replace', 'keep', 'drop', 'hashmod', 'labelmap', 'labeldrop', 'labelkeep',
                            'lowercase', 'uppercase', 'keepequal', 'dropequal']}}}}}}
def monitor(kind, endpoints):
    return {'type': 'object', 'additionalProperties': False, 'required': ['apiVersion', 'kind', 'metadata', 'spec'], 'properties': {
        'apiVersion': {'const': 'monitoring.coreos.com/v1'}, 'kind': {'const': kind}, 'metadata': METADATA,
        'spec': {'type': 'object', 'additionalProperties': False, 'required': ['selector', endpoints], 'properties': {
            'selector': SELECTOR, 'namespaceSelector': NAMESPACE_SELECTOR, 'jobLabel': {'type': 'string'},
            endpoints: {'type': 'array', 'minItems': 1, 'items': ENDPOINT}}}}}
RULE = {'type': 'object', 'additionalProperties': False, 'required': ['expr'],
        'oneOf': [{'required': ['alert']}, {'required': ['record']}], 'properties': {
    'alert': {'type': 'string', 'pattern': '^[a-zA-Z_][a-zA-Z0-9_]*$'}, 'record': {'type': 'string'},
    'expr': {'type': 'string', 'minLength': 1}, 'for': DURATION, 'keep_firing_for': DURATION,
    'labels': STRMAP, 'annotations': STRMAP}}
CRD_SCHEMAS = {
    'PodMonitor': monitor('PodMonitor', 'podMetricsEndpoints'),
    'ServiceMonitor': monitor('ServiceMonitor', 'endpoints'),
    'PrometheusRule': {'type': 'object', 'additionalProperties': False, 'required': ['apiVersion', 'kind', 'metadata', 'spec'], 'properties': {
        'apiVersion': {'const': 'monitoring.coreos.com/v1'}, 'kind': {'const': 'PrometheusRule'}, 'metadata': METADATA,
        'spec': {'type': 'object', 'additionalProperties': False, 'required': ['groups'], 'properties': {
            'groups': {'type': 'array', 'minItems': 1, 'items': {'type': 'object', 'additionalProperties': False, 'required': ['name', 'rules'], 'properties': {
                'name': {'type': 'string', 'minLength': 1}, 'interval': DURATION,
                'rules': {'type': 'array', 'minItems': 1, 'items': RULE}}}}}}}},
}

# cert-manager (cert-manager.io/v1): the chart's own CA (a self-signed Issuer, a CA Certificate, a
# CA Issuer) and the webhook's serving certificate.
CM_DURATION = {'type': 'string', 'pattern': r'^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$'}
ISSUER_REF = {'type': 'object', 'additionalProperties': False, 'required': ['name'], 'properties': {
    'name': {'type': 'string', 'minLength': 1}, 'kind': {'enum': ['Issuer', 'ClusterIssuer']},
    'group': {'const': 'cert-manager.io'}}}
KEY_USAGES = ['signing', 'digital signature', 'content commitment', 'key encipherment', 'key agreement',
              'data encipherment', 'cert sign', 'crl sign', 'encipher only', 'decipher only', 'any',
              'server auth', 'client auth', 'code signing', 'email protection', 's/mime', 'ipsec end system',
              'ipsec tunnel', 'ipsec user', 'timestamping', 'ocsp signing', 'microsoft sgc', 'netscape sgc']
def cert_manager(kind, spec):
    return {'type': 'object', 'additionalProperties': False, 'required': ['apiVersion', 'kind', 'metadata', 'spec'], 'properties': {
        'apiVersion': {'const': 'cert-manager.io/v1'}, 'kind': {'const': kind}, 'metadata': METADATA, 'spec': spec}}
CRD_SCHEMAS['Issuer'] = cert_manager('Issuer', {
    'type': 'object', 'additionalProperties': False, 'minProperties': 1, 'maxProperties': 1, 'properties': {
        'selfSigned': {'type': 'object', 'additionalProperties': False, 'properties': {
            'crlDistributionPoints': {'type': 'array', 'items': {'type': 'string'}}}},
        'ca': {'type': 'object', 'additionalProperties': False, 'required': ['secretName'], 'properties': {
            'secretName': NAME}}}})
CRD_SCHEMAS['Certificate'] = cert_manager('Certificate', {
    'type': 'object', 'additionalProperties': False, 'required': ['secretName', 'issuerRef'], 'properties': {
        'secretName': NAME, 'isCA': {'type': 'boolean'}, 'commonName': {'type': 'string', 'maxLength': 64},
        'dnsNames': {'type': 'array', 'minItems': 1, 'items': {'type': 'string', 'minLength': 1}},
        'duration': CM_DURATION, 'renewBefore': CM_DURATION,
        'usages': {'type': 'array', 'items': {'enum': KEY_USAGES}},
        'privateKey': {'type': 'object', 'additionalProperties': False, 'properties': {
            'algorithm': {'enum': ['RSA', 'ECDSA', 'Ed25519']}, 'size': {'type': 'integer'},
            'encoding': {'enum': ['PKCS1', 'PKCS8']}, 'rotationPolicy': {'enum': ['Never', 'Always']}}},
        'issuerRef': ISSUER_REF}})
# The groups of the kinds above.
CRD_GROUPS = {'monitoring.coreos.com/v1': {'PodMonitor', 'ServiceMonitor', 'PrometheusRule'},
              'cert-manager.io/v1': {'Issuer', 'Certificate'}}
