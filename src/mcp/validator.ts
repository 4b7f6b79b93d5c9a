import { AjvJsonSchemaValidator } from '@modelcontextprotocol/server/validators/ajv'

/**
 * One JSON Schema validator for every SDK server and client the gateway builds. The SDK's
 * default builds an Ajv engine per instance, and compiling schemas anew per instance is the
 * largest single cost of constructing a server; sharing one keeps that off the request path.
 */
export const sharedJsonSchemaValidator = new AjvJsonSchemaValidator()
