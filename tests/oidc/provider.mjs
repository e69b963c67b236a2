// A local OpenID Connect provider for the console's sign-on tests (oauth2-mock-server).
// Prints "issuer URL" once listening. Each token carries the claims in the JSON file
// named by OIDC_CLAIMS_FILE, read when the token is made, so a test can change who logs
// in between two logins.
import { readFileSync } from 'node:fs';
import { OAuth2Server } from 'oauth2-mock-server';

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.service.on('beforeTokenSigning', (token) => {
  const file = process.env.OIDC_CLAIMS_FILE;
  if (file) {
    Object.assign(token.payload, JSON.parse(readFileSync(file, 'utf8')));
  }
});
await server.start(0, '127.0.0.1');
console.log(`issuer ${server.issuer.url}`);
