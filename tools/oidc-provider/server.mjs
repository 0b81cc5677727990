// A real OpenID Provider for `make demo` and the sign-in tests: panva's oidc-provider
// (OpenID Certified) with its development login, which accepts any user name and password.
// Never for production: accounts are made up from the login name.
//
//   node server.mjs --port 9000 --client-id demo --client-secret s3cret \
//     --redirect-uri http://localhost:8000/api/auth/google/callback [--redirect-uri ...] \
//     [--client other:secret2]   (a second client, for tests of tokens meant for another app)
//     [--issuer http://oidc.localhost:9000]   (its public URL, when not http://host:port)
//     [--client-secret-file /run/secrets/google_client_secret]   (instead of --client-secret)
//
// Accounts: the login name is the account id (`sub`); the email is `<login>@example.com`,
// verified unless the login starts with "unverified". Two RS256 signing keys (kids
// "demo-key-1" and "demo-key-2") are published; tokens are signed with the first.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '9000' },
    host: { type: 'string', default: '127.0.0.1' },
    'client-id': { type: 'string', default: 'avatar-forge-demo' },
    'client-secret': { type: 'string' },
    'client-secret-file': { type: 'string' },
    issuer: { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    client: { type: 'string', multiple: true, default: [] },
  },
});
if (args['client-secret-file']) {
  args['client-secret'] = readFileSync(args['client-secret-file'], 'utf8').trim();
}
if (!args['client-secret']) {
  console.error('--client-secret (or a non-empty --client-secret-file) is required');
  process.exit(2);
}

function signingKey(kid) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
}

const client = (clientId, secret) => ({
  client_id: clientId,
  client_secret: secret,
  redirect_uris: args['redirect-uri'],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
});
const others = args.client.map((pair) => client(...pair.split(':', 2)));

const issuer = args.issuer ?? `http://${args.host}:${args.port}`;
const provider = new Provider(issuer, {
  clients: [client(args['client-id'], args['client-secret']), ...others],
  jwks: { keys: [signingKey('demo-key-1'), signingKey('demo-key-2')] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  // Put email and name into the ID token, as Google does.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'picture'],
  },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.com`,
          email_verified: !id.startsWith('unverified'),
          name: id,
        };
      },
    };
  },
});

provider.listen(Number(args.port), args.host, () => {
  console.log(`demo OpenID provider on ${issuer}`);
});
