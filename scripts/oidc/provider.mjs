// A real OpenID Connect provider for Shopkeep's tests and demos: `oidc-provider` (the
// certified Node.js implementation) with its development login page, which accepts any login
// name and any password. It listens on 127.0.0.1 at OIDC_PORT (0: any free port) and prints
// one line, `issuer <url>`, once it accepts connections.
//
// Environment:
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET   the one registered client (client_secret_basic)
//   OIDC_REDIRECT_URIS                   its redirect URIs, comma-separated
//   OIDC_PORT                            default 0
//   OIDC_ID_TOKEN_CLAIMS=1               put email and name into the ID token as well as the
//                                        userinfo endpoint (the default, as the spec says for
//                                        the code flow, is userinfo only)
//
// Accounts follow from the login name typed on the login page:
//   alice@example.test              sub "alice@example.test", email verified
//   unverified:bob@example.test     sub "unverified:bob@example.test", email not verified
//   noemail:carol                   sub "noemail:carol", no email claim at all
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const clientId = process.env.OIDC_CLIENT_ID ?? 'shopkeep';
const clientSecret = process.env.OIDC_CLIENT_SECRET ?? 'shopkeep-secret';
const redirectUris = (process.env.OIDC_REDIRECT_URIS ?? 'http://127.0.0.1:8080/api/v1/auth/oidc/demo/callback')
  .split(',').map((uri) => uri.trim()).filter(Boolean);
const port = Number(process.env.OIDC_PORT ?? 0);

function claimsFor(login) {
  if (login.startsWith('noemail:')) {
    return { name: login.slice('noemail:'.length) };
  }
  if (login.startsWith('unverified:')) {
    const email = login.slice('unverified:'.length);
    return { email, email_verified: false, name: email.split('@')[0] };
  }
  return { email: login, email_verified: true, name: login.split('@')[0] };
}

const server = http.createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    conformIdTokenClaims: process.env.OIDC_ID_TOKEN_CLAIMS !== '1',
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    pkce: { required: () => true },
    async findAccount(_ctx, sub) {
      return { accountId: sub, async claims() { return { sub, ...claimsFor(sub) }; } };
    },
  });
  server.on('request', provider.callback());
  console.log(`issuer ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
